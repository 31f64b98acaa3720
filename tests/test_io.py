"""grucy's file format: exact round trips, and damaged files refused with clear errors;
atomic writes (a save killed mid-write leaves the previous file intact); no pickle."""

import errno
import glob
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest

import grucy
from grucy import io, reference


@pytest.mark.parametrize("cls", [grucy.GRU, reference.GRU])
def test_save_load_round_trip_is_exact(tmp_path, cls):
    g = cls(3, 5, 2, bidirectional=True, reset_after=False, batch_first=True,
            dtype=np.float64, seed=1)
    path = tmp_path / "g.grucy"
    grucy.save(g, path)
    h = grucy.load(path)
    assert type(h) is cls and repr(h) == repr(g)
    for k, v in g.state_dict().items():
        np.testing.assert_array_equal(h.state_dict()[k], v)
        assert h.state_dict()[k].dtype == v.dtype


def _saved(tmp_path):
    path = tmp_path / "g.grucy"
    grucy.save(grucy.GRU(2, 3, seed=0), path)
    return path, path.read_bytes()


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:10], "truncated"),
    (lambda raw: raw[:-7], "checksum"),
    (lambda raw: raw[:80] + bytes([raw[80] ^ 1]) + raw[81:], "checksum"),
    (lambda raw: b"PK\x03\x04" + raw[4:], "not a grucy file"),
    (lambda raw: raw[:8] + (2).to_bytes(4, "little") + raw[12:], "version 2"),
    (lambda raw: b"", "not a grucy file"),
])
def test_damaged_files_are_refused(tmp_path, damage, message):
    path, raw = _saved(tmp_path)
    path.write_bytes(damage(raw))
    with pytest.raises(io.FileFormatError, match=message):
        grucy.load(path)


def test_foreign_byte_order_is_refused(tmp_path):
    path = tmp_path / "x.grucy"
    io.write_archive(path, "grucy.GRU", {}, {"a": np.arange(3.0)})
    kind, config, arrays = io.read_archive(path)
    raw = path.read_bytes()
    other = "big" if raw.find(b'"byteorder": "little"') >= 0 else "little"
    io.sys = type("S", (), {"byteorder": other})  # pretend to be the other machine
    try:
        with pytest.raises(io.FileFormatError, match="endian"):
            io.read_archive(path)
    finally:
        io.sys = sys


def test_missing_file_and_wrong_kind(tmp_path):
    with pytest.raises(FileNotFoundError):
        grucy.load(tmp_path / "nope.grucy")
    path = tmp_path / "c.grucy"
    io.write_archive(path, "checkpoint", {"epoch": 1}, {})
    with pytest.raises(io.FileFormatError, match="expected a 'grucy.GRU'"):
        io.read_archive(path, kind="grucy.GRU")
    with pytest.raises(io.FileFormatError, match="cannot build"):
        grucy.load(path)


def test_unsaveable_objects_and_configs_are_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot save"):
        grucy.save(object(), tmp_path / "o")
    with pytest.raises(TypeError, match="dtype"):
        io.write_archive(tmp_path / "o", "k", {}, {"a": np.array([object()])})
    with pytest.raises(TypeError, match="JSON"):
        io.write_archive(tmp_path / "o", "k", {"x": float("nan")}, {})
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_failed_write_keeps_the_previous_file(tmp_path):
    path, raw = _saved(tmp_path)
    with pytest.raises(TypeError):
        io.write_archive(path, "k", {"bad": object()}, {})
    assert path.read_bytes() == raw
    assert [p.name for p in tmp_path.iterdir()] == ["g.grucy"]


# ---------------------------------------------------------------------------------------
# Every kind of damage raises FileFormatError (or FileNotFoundError / OSError for paths),
# never another exception, never a crash, never a half-built object.



def _craft(path, header, payload=b"", *, version=io.FORMAT_VERSION, magic=io.MAGIC):
    """A file with a *valid* checksum around any header: what a malicious or buggy
    writer could produce.  ``header`` is a dict (JSON-encoded) or raw bytes."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    digest = hashlib.sha256(head + payload).digest()
    path.write_bytes(io._PREFIX.pack(magic, version, len(head), digest) + head + payload)
    return path


def _gru_header(**change):
    g = grucy.GRU(2, 3, seed=0)
    arrays, payload, offset = [], b"", 0
    for name, a in g.state_dict().items():
        arrays.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape),
                       "offset": offset, "nbytes": a.nbytes})
        payload += a.tobytes()
        offset += a.nbytes
    header = {"kind": "grucy.GRU", "config": g._get_config(), "arrays": arrays,
              "byteorder": sys.byteorder, "writer": "test"}
    header.update(change)
    return header, payload


def test_crafted_valid_file_loads(tmp_path):
    """The crafting helper itself writes loadable files (so the refusals below are real)."""
    header, payload = _gru_header()
    g = grucy.load(_craft(tmp_path / "ok.grucy", header, payload))
    assert isinstance(g, grucy.GRU)
    for k, v in grucy.GRU(2, 3, seed=0).state_dict().items():
        np.testing.assert_array_equal(g.state_dict()[k], v)


def test_every_truncation_is_refused(tmp_path):
    path, raw = _saved(tmp_path)
    cuts = sorted(set(range(0, 60)) | set(range(60, len(raw), max(1, len(raw) // 50)))
                  | {len(raw) - 1})
    for cut in cuts:
        path.write_bytes(raw[:cut])
        with pytest.raises(io.FileFormatError, match="truncated|not a grucy|checksum"):
            grucy.load(path)


def test_every_single_bit_flip_is_refused(tmp_path):
    path, raw = _saved(tmp_path)
    positions = range(0, len(raw), max(1, len(raw) // 150))
    for pos in positions:
        for bit in (0, 7):
            damaged = bytearray(raw)
            damaged[pos] ^= 1 << bit
            path.write_bytes(bytes(damaged))
            with pytest.raises(io.FileFormatError):
                grucy.load(path)


@pytest.mark.parametrize("size", [0, 1, 8, 51, 52, 53, 1000, 100_000])
def test_random_garbage_is_refused(tmp_path, size):
    rng = np.random.default_rng(size)
    path = tmp_path / "junk.grucy"
    for prefix in (b"", io.MAGIC, io.MAGIC + (1).to_bytes(4, "little")):
        path.write_bytes(prefix + rng.bytes(size))
        with pytest.raises(io.FileFormatError):
            grucy.load(path)


@pytest.mark.parametrize("version", [0, 2, 255, 2**32 - 1])
def test_other_format_versions_are_refused(tmp_path, version):
    header, payload = _gru_header()
    path = _craft(tmp_path / "v.grucy", header, payload, version=version)
    with pytest.raises(io.FileFormatError, match=f"version {version}; this grucy reads "
                                                 f"version {io.FORMAT_VERSION}"):
        grucy.load(path)


def test_other_byte_order_is_refused_from_the_file_alone(tmp_path):
    """A file as a big-endian machine writes it (valid checksum), no monkeypatching."""
    other = "big" if sys.byteorder == "little" else "little"
    header, payload = _gru_header(byteorder=other)
    payload = np.frombuffer(payload, np.float32).byteswap().tobytes()
    path = _craft(tmp_path / "be.grucy", header, payload)
    with pytest.raises(io.FileFormatError, match=f"written on a {other}-endian machine"):
        grucy.load(path)
    header, payload = _gru_header(byteorder="middle")
    with pytest.raises(io.FileFormatError, match="byteorder 'middle'"):
        grucy.load(_craft(tmp_path / "me.grucy", header, payload))


def _first_array(header, **change):
    header["arrays"][0].update(change)
    return header


@pytest.mark.parametrize("name, make", [
    ("not JSON", lambda: (b"{not json", b"")),
    ("not UTF-8", lambda: (b"\xff\xfe{}", b"")),
    ("a list", lambda: (b"[1, 2]", b"")),
    ("no kind", lambda: ({"config": {}, "arrays": [], "byteorder": sys.byteorder}, b"")),
    ("kind a list", lambda: (_gru_header(kind=["grucy.GRU"])[0], b"")),
    ("arrays a dict", lambda: (_gru_header(arrays={"a": 1})[0], b"")),
    ("deep nesting", lambda: (b"[" * 100_000 + b"]" * 100_000, b"")),
    ("huge integer", lambda: (b'{"kind": ' + b"9" * 5000 + b"}", b"")),
    ("object dtype", lambda: (_first_array(_gru_header()[0], dtype="object"), b"")),
    ("numpy dtype string", lambda: (_first_array(_gru_header()[0], dtype="<f4"), b"")),
    ("negative offset", lambda: (_first_array(_gru_header()[0], offset=-4),
                                 _gru_header()[1])),
    ("float offset", lambda: (_first_array(_gru_header()[0], offset=0.0), _gru_header()[1])),
    ("nbytes too small", lambda: (_first_array(_gru_header()[0], nbytes=4), _gru_header()[1])),
    ("beyond the end", lambda: (_first_array(_gru_header()[0], offset=10**9),
                                _gru_header()[1])),
    ("huge shape", lambda: (_first_array(_gru_header()[0], shape=[2**40, 2**40]),
                            _gru_header()[1])),
    ("negative shape", lambda: (_first_array(_gru_header()[0], shape=[-9, 2]),
                                _gru_header()[1])),
    ("bool in shape", lambda: (_first_array(_gru_header()[0], shape=[True, 9]),
                               _gru_header()[1])),
    ("repeated name", lambda: (_gru_header(arrays=_gru_header()[0]["arrays"][:1] * 2)[0],
                               _gru_header()[1])),
])
def test_damaged_headers_with_valid_checksums_are_refused(tmp_path, name, make):
    header, payload = make()
    path = _craft(tmp_path / "h.grucy", header, payload)
    with pytest.raises(io.FileFormatError, match="damaged grucy header"):
        grucy.load(path)


@pytest.mark.parametrize("name, config_change, match", [
    ("unknown argument", {"colour": "red"}, "unexpected keyword"),
    ("bad size", {"hidden_size": -3}, "hidden_size"),
    ("bad dtype", {"dtype": "float16"}, "dtype"),
    ("bad flag", {"bias": "yes"}, "bias"),
    ("config not a dict", None, "config must be a dict"),
])
def test_configs_that_cannot_be_built_are_refused(tmp_path, name, config_change, match):
    header, payload = _gru_header()
    if config_change is None:
        header["config"] = [1, 2]
    else:
        header["config"].update(config_change)
    path = _craft(tmp_path / "c.grucy", header, payload)
    with pytest.raises(io.FileFormatError, match=f"cannot rebuild.*{match}"):
        grucy.load(path)


def test_a_file_asking_for_a_huge_layer_allocates_nothing(tmp_path):
    header, payload = _gru_header()
    header["config"]["hidden_size"] = 2**30
    path = _craft(tmp_path / "huge.grucy", header, payload)
    tracemalloc.start()
    try:
        with pytest.raises(io.FileFormatError, match="cannot rebuild") as info:
            grucy.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "exceeds 2**31-1" in str(info.value)
    assert peak < 4 << 20, peak


def test_arrays_of_another_dtype_or_with_nan_are_refused(tmp_path):
    header, payload = _gru_header()
    header["config"]["dtype"] = "float64"  # the arrays are float32
    with pytest.raises(io.FileFormatError, match="has dtype float32, the layer float64"):
        grucy.load(_craft(tmp_path / "d.grucy", header, payload))
    header, payload = _gru_header()
    payload = np.full(len(payload) // 4, np.nan, np.float32).tobytes()
    with pytest.raises(io.FileFormatError, match="NaN"):
        grucy.load(_craft(tmp_path / "n.grucy", header, payload))


def test_saving_non_finite_parameters_is_refused(tmp_path):
    g = grucy.GRU(2, 3, seed=0)
    g.parameters()[1][0, 0] = np.inf
    with pytest.raises(ValueError, match="parameter 'weight_hh_l0' contains NaN or inf"):
        grucy.save(g, tmp_path / "g.grucy")
    assert not list(tmp_path.iterdir())


def test_text_mode_copy_is_recognised(tmp_path):
    path, raw = _saved(tmp_path)
    path.write_bytes(raw.replace(b"\r\n", b"\n"))
    with pytest.raises(io.FileFormatError, match="line endings"):
        grucy.load(path)


def test_a_huge_foreign_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:  # sparse: 64 GiB of zeros that take no disk
        f.truncate(64 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(io.FileFormatError, match="not a grucy file"):
            grucy.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    with open(path, "r+b") as f:  # a grucy prefix in front of a file larger than memory
        f.write(io._PREFIX.pack(io.MAGIC, io.FORMAT_VERSION, 10, b"\0" * 32))
    with pytest.raises(io.FileFormatError, match="more than the memory"):
        grucy.load(path)


def test_paths_that_are_not_files(tmp_path):
    with pytest.raises(IsADirectoryError):
        grucy.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        grucy.save(grucy.GRU(2, 3), tmp_path / "no" / "such" / "dir.grucy")
    with pytest.raises(TypeError):
        grucy.load(None)


def test_a_read_only_file_system_is_named_as_such(tmp_path, monkeypatch):
    # (os.access says "not writable" there too, and the error blamed the file's mode)
    path = tmp_path / "m.grucy"
    grucy.save(grucy.GRU(2, 3, seed=0), path)
    before = path.read_bytes()
    real = os.statvfs

    class ReadOnly:
        def __init__(self, st):
            self.st = st

        def __getattr__(self, name):
            value = getattr(self.st, name)
            return value | os.ST_RDONLY if name == "f_flag" else value

    monkeypatch.setattr(io.os, "statvfs", lambda d: ReadOnly(real(d)))
    for target in (path, tmp_path / "new.grucy"):
        with pytest.raises(OSError, match="cannot save: the file system is mounted "
                                          "read-only") as info:
            grucy.save(grucy.GRU(2, 3, seed=1), target)
        assert info.value.errno == errno.EROFS
    assert path.read_bytes() == before and not (tmp_path / "new.grucy").exists()


def test_bytes_and_empty_paths(tmp_path):
    g = grucy.GRU(2, 3, seed=0)
    path = os.fsencode(tmp_path / "g.grucy")
    grucy.save(g, path)                      # bytes paths, as load takes them
    assert grucy.load(path).state_dict().keys() == g.state_dict().keys()
    with pytest.raises(ValueError, match="path must name a file, got an empty path"):
        grucy.save(g, "")


# ---------------------------------------------------------------------------------------
# Atomic writes: permissions, failures, and a process killed mid-save.

def test_a_write_protected_file_is_not_replaced(tmp_path, monkeypatch):
    # The rename needs only the directory's permission, so without the check a save
    # replaced a file its owner had made read-only.  (root may write anything: there
    # the answer of os.access for a non-root owner is given to the check.)
    path = tmp_path / "release.grucy"
    grucy.save(grucy.GRU(2, 3, seed=0), path)
    before = path.read_bytes()
    path.chmod(0o444)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(io.os, "access", lambda p, mode, **kw: False
                            if os.fspath(p) == os.fspath(path) and mode & os.W_OK
                            else real(p, mode, **kw))
    with pytest.raises(PermissionError, match="write-protected"):
        grucy.save(grucy.GRU(2, 3, seed=1), path)
    assert path.read_bytes() == before
    assert not glob.glob(io.temp_name_pattern(path))
    path.chmod(0o644)
    monkeypatch.undo()
    grucy.save(grucy.GRU(2, 3, seed=1), path)  # writable again: replaced
    assert path.read_bytes() != before


def test_saved_files_get_the_usual_permissions(tmp_path):
    path = tmp_path / "g.grucy"
    old = os.umask(0o027)
    try:
        grucy.save(grucy.GRU(2, 3), path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~io._UMASK
    path.chmod(0o640)
    grucy.save(grucy.GRU(2, 3), path)  # an existing file keeps its permissions
    assert path.stat().st_mode & 0o777 == 0o640


def test_disk_full_mid_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path, raw = _saved(tmp_path)
    real_open = open

    class Full:
        def __init__(self, f):
            self.f, self.n = f, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, b):
            self.n += 1
            if self.n > 1:
                raise OSError(28, "No space left on device")
            self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

    # (io's temporary file is made with open(name, "xb"): the hook sits on that name)
    monkeypatch.setattr(io, "open", lambda name, mode: Full(real_open(name, mode)),
                        raising=False)
    with pytest.raises(OSError, match="No space"):
        grucy.save(grucy.GRU(2, 3, seed=5), path)
    monkeypatch.undo()
    assert path.read_bytes() == raw
    assert [p.name for p in tmp_path.iterdir()] == ["g.grucy"]  # temp file removed


def _child_env():
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(grucy.__file__))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


SLOW_SAVE = textwrap.dedent("""
    import os, sys, time
    import grucy
    from grucy import io
    path = sys.argv[1]
    model = grucy.GRU(64, 256, num_layers=2, seed=2)
    real_open = open

    class Stalling:
        # Writes the first chunk and half of the second, then hangs until killed.
        def __init__(self, f):
            self.f, self.n = f, 0
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.f.close()
        def write(self, b):
            self.n += 1
            if self.n == 1:
                return self.f.write(b)
            self.f.write(b[:len(b) // 2])
            self.f.flush()
            print("MIDWRITE", flush=True)
            time.sleep(120)
        def __getattr__(self, name):
            return getattr(self.f, name)

    io.open = lambda name, mode: Stalling(real_open(name, mode))   # its temporary file
    grucy.save(model, path)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_killed_mid_save_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "model.grucy"
    before = grucy.GRU(64, 256, num_layers=2, seed=1)
    grucy.save(before, path)
    raw = path.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(path)],
                             stdout=subprocess.PIPE, env=_child_env(), text=True)
    try:
        assert child.stdout.readline().strip() == "MIDWRITE"
        temps = glob.glob(io.temp_name_pattern(path))
        assert len(temps) == 1 and 0 < os.path.getsize(temps[0]) < len(raw)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == raw
    loaded = grucy.load(path)
    for k, v in before.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v)
    # The dead save's partial file stays (policy: grucy deletes no temp files), hidden
    # from *.grucy globs, and confuses neither later loads nor later saves.
    assert [os.path.basename(p) for p in glob.glob(str(tmp_path / "*.grucy"))] == [
        "model.grucy"]
    assert len(glob.glob(io.temp_name_pattern(path))) == 1
    after = grucy.GRU(64, 256, num_layers=2, seed=3)
    grucy.save(after, path)
    for k, v in after.state_dict().items():
        np.testing.assert_array_equal(grucy.load(path).state_dict()[k], v)
    with pytest.raises(io.FileFormatError):  # the leftover is not a loadable file
        grucy.load(glob.glob(io.temp_name_pattern(path))[0])


SAVE_LOOP = textwrap.dedent("""
    import sys
    import grucy
    path = sys.argv[1]
    models = [grucy.GRU(64, 256, num_layers=2, seed=s) for s in (1, 2)]
    i = 0
    while True:
        grucy.save(models[i % 2], path)
        i += 1
        if i == 2:
            print("RUNNING", flush=True)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_killing_a_saving_loop_at_random_times_never_loses_the_file(tmp_path):
    path = tmp_path / "model.grucy"
    expected = [grucy.GRU(64, 256, num_layers=2, seed=s).state_dict() for s in (1, 2)]
    rng = np.random.default_rng(0)
    for delay in rng.uniform(0, 0.05, size=3):
        child = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(path)],
                                 stdout=subprocess.PIPE, env=_child_env(), text=True)
        try:
            assert child.stdout.readline().strip() == "RUNNING"
            time.sleep(delay)
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        loaded = grucy.load(path).state_dict()
        assert any(all(np.array_equal(loaded[k], want[k]) for k in want)
                   for want in expected)


# ---------------------------------------------------------------------------------------
# No pickle anywhere a file is read.

def test_no_pickle_when_loading_anywhere_in_the_package():
    root = os.path.dirname(grucy.__file__)
    offenders = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith((".py", ".pyx")):
                continue
            text = open(os.path.join(dirpath, name), encoding="utf-8").read()
            for m in re.finditer(r"\bnp\.load\s*\(|\bnumpy\.load\s*\(", text):
                call = text[m.start():text.find(")", m.end()) + 1]
                if "allow_pickle=False" not in call:
                    offenders.append(f"{name}: {call}")
            for m in re.finditer(r"^\s*(import pickle|from pickle|import cloudpickle|"
                                 r"import joblib|import dill)", text, re.M):
                offenders.append(f"{name}: {m.group(0).strip()}")
            if re.search(r"\btorch\.load\s*\(", text) and "weights_only=True" not in text:
                offenders.append(f"{name}: torch.load without weights_only=True")
    assert offenders == []


def test_loading_a_training_checkpoint_says_how_to_resume_it(tmp_path):
    """It read "holds a 'grucy.checkpoint', which this grucy cannot build", as for a
    file from another version."""
    series = np.sin(np.arange(60.0) / 3)
    grucy.Forecaster(lookback=4, hidden_size=4, epochs=2, random_state=0).fit(
        series, checkpoint=tmp_path / "run.ckpt")
    with pytest.raises(grucy.io.FileFormatError, match=r"run.ckpt: is a training "
                                                      r"checkpoint, not a model: resume "
                                                      r"it with fit\(\.\.\., resume="):
        grucy.load(tmp_path / "run.ckpt")
