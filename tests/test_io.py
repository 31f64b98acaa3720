"""grucy's file format: exact round trips, and damaged files refused with clear errors."""

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
    import sys
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
