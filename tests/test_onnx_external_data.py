"""ONNX models whose weights live in external data files.

``from_onnx(path)`` reads external data through onnx's own loader, which refuses data
files outside the model's directory (``..``, absolute paths, symbolic links), missing or
non-regular files and offsets/lengths past a file's end; grucy re-raises those refusals
as ValueError naming the model.  Bytes and ModelProto objects never make grucy read a
file.  A legitimate external-data model round-trips exactly, checked against ONNX
Runtime.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import grucy
from grucy import interop

from conftest import importorskip

onnx = importorskip("onnx")
from onnx import external_data_helper  # noqa: E402

SECRET = np.arange(1000, dtype=np.float32)


def _layer():
    return grucy.GRU(3, 8, num_layers=2, bidirectional=True, seed=0)


@pytest.fixture
def model_dir(tmp_path):
    """A model directory inside tmp_path, and a 'secret' file next to (outside) it."""
    d = tmp_path / "model"
    d.mkdir()
    (tmp_path / "secret.bin").write_bytes(SECRET.tobytes())
    return d


def _save_external(layer, d, name="gru.onnx", location="weights.bin"):
    path = d / name
    # The weights go to the data file; small shape constants stay inline (ONNX Runtime's
    # shape inference cannot read those from external data).
    onnx.save_model(interop.to_onnx(layer), os.fspath(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=location, size_threshold=128)
    return path


def _point_to(path, location=None, **fields):
    """Rewrite the external-data entries of every tensor of the model at ``path``."""
    model = onnx.load(os.fspath(path), load_external_data=False)
    for t in model.graph.initializer:
        if external_data_helper.uses_external_data(t):
            for e in t.external_data:
                if e.key == "location" and location is not None:
                    e.value = location
                if e.key in fields:
                    e.value = str(fields[e.key])
    onnx.save_model(model, os.fspath(path))
    return path


def test_the_models_really_use_external_data(model_dir):
    path = _save_external(_layer(), model_dir)
    raw = onnx.load(os.fspath(path), load_external_data=False)
    weights = [t for t in raw.graph.initializer if t.name.startswith(("W_", "R_", "B_"))]
    assert len(weights) == 6
    assert all(external_data_helper.uses_external_data(t) for t in weights)
    assert (model_dir / "weights.bin").stat().st_size > 0


def test_external_data_model_round_trips_exactly_and_matches_onnx_runtime(model_dir):
    ort = importorskip("onnxruntime")
    layer = _layer()
    path = _save_external(layer, model_dir)
    back = interop.from_onnx(path)
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v, err_msg=k)
    x = np.random.default_rng(0).standard_normal((7, 4, 3)).astype(np.float32)
    y, h_n = layer.forward(x, training=False)
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    y_ort, h_ort = session.run(None, {"x": x})
    np.testing.assert_allclose(y_ort, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_ort, h_n, rtol=1e-5, atol=1e-5)
    y_back, _ = back.forward(x, training=False)
    np.testing.assert_array_equal(y_back, y)
    # a relative path from elsewhere resolves the data next to the model, not in the cwd
    cwd = os.getcwd()
    os.chdir(model_dir.parent)
    try:
        again = interop.from_onnx(os.path.join("model", "gru.onnx"))
    finally:
        os.chdir(cwd)
    np.testing.assert_array_equal(again.state_dict()["weight_hh_l1"],
                                  layer.state_dict()["weight_hh_l1"])


@pytest.mark.parametrize("location, match", [
    ("../secret.bin", r"points outside the directory"),
    ("../../../../../../../../../../etc/passwd", r"points outside the directory"),
    ("sub/../../secret.bin", r"outside the directory"),
    ("ABSOLUTE", r"should be a relative path"),
    ("", r"should not be empty"),
    (".", r"not regular file"),
])
def test_external_data_outside_the_model_directory_is_refused(model_dir, location, match):
    path = _save_external(_layer(), model_dir)
    if location == "ABSOLUTE":
        location = os.fspath(model_dir.parent / "secret.bin")
    _point_to(path, location)
    (model_dir / "sub").mkdir(exist_ok=True)
    with pytest.raises(ValueError, match=rf"gru\.onnx: the model's external data cannot be "
                                         rf"read: .*{match}"):
        interop.from_onnx(path)


def test_a_symbolic_link_to_data_elsewhere_is_refused(model_dir):
    path = _save_external(_layer(), model_dir)
    os.symlink(model_dir.parent / "secret.bin", model_dir / "link.bin")
    _point_to(path, "link.bin")
    with pytest.raises(ValueError, match=r"is a symbolic link"):
        interop.from_onnx(path)


def test_missing_external_data_is_refused(model_dir):
    path = _save_external(_layer(), model_dir)
    os.remove(model_dir / "weights.bin")
    with pytest.raises(ValueError, match=r"external data cannot be read: .*weights\.bin.*"
                                         r"not regular file"):
        interop.from_onnx(path)


def test_truncated_external_data_is_refused(model_dir):
    path = _save_external(_layer(), model_dir)
    data = model_dir / "weights.bin"
    size = data.stat().st_size
    with open(data, "r+b") as f:
        f.truncate(size - 8)  # the last tensor loses its tail
    with pytest.raises(ValueError, match=r"external data cannot be read: External data "
                                         r"(length|offset) .* exceeds"):
        interop.from_onnx(path)


def test_external_data_without_a_length_and_too_short_is_refused(model_dir):
    """No ``length`` entry: onnx reads to the end of the file, so a short file gives a
    tensor with too few values, which must be refused rather than padded or misread."""
    layer = grucy.GRU(3, 4, seed=0)
    model = interop.to_onnx(layer)
    W = next(t for t in model.graph.initializer if t.name == "W_l0")
    raw = W.raw_data if W.raw_data else np.asarray(
        onnx.numpy_helper.to_array(W)).tobytes()
    (model_dir / "w.bin").write_bytes(raw[:-4])
    W.ClearField("float_data")
    W.raw_data = raw
    external_data_helper.set_external_data(W, "w.bin")
    W.ClearField("raw_data")
    path = model_dir / "short.onnx"
    onnx.save_model(model, os.fspath(path))
    with pytest.raises(ValueError, match=r"initializer 'W_l0' is damaged"):
        interop.from_onnx(path)
    (model_dir / "w.bin").write_bytes(raw)  # the complete file converts
    np.testing.assert_array_equal(interop.from_onnx(path).state_dict()["weight_ih_l0"],
                                  layer.state_dict()["weight_ih_l0"])


@pytest.mark.parametrize("form", ["bytes", "proto"])
def test_in_memory_models_never_read_external_files(model_dir, form, monkeypatch):
    path = _save_external(_layer(), model_dir)
    # Even with the data file in the working directory, nothing is read from there.
    monkeypatch.chdir(model_dir)
    given = (path.read_bytes() if form == "bytes"
             else onnx.load(os.fspath(path), load_external_data=False))
    with pytest.raises(ValueError, match=r"initializer '[WRB]_l0' keeps its data in an external "
                                         r"file \('weights\.bin'\) that was not loaded"):
        interop.from_onnx(given)
    # loaded with its data, the same model converts
    assert isinstance(interop.from_onnx(onnx.load(os.fspath(path))), grucy.GRU)


@pytest.mark.parametrize("content, match", [
    (b"", r"the model has no GRU node"),
    (b"\x00garbage" * 300, r"not an ONNX model"),
    (b"GRUCY", r"not an ONNX model"),
], ids=["empty", "garbage", "grucy-magic"])
def test_garbage_files_are_refused_with_a_value_error(tmp_path, content, match):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        interop.from_onnx(path)
    if content:
        with pytest.raises(ValueError, match=r"bytes that are not an ONNX model"):
            interop.from_onnx(content)


def test_a_truncated_model_file_is_refused(tmp_path):
    raw = interop.to_onnx(_layer()).SerializeToString()
    for cut in (len(raw) // 2, len(raw) - 3, 17):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(raw[:cut])
        with pytest.raises(ValueError):
            interop.from_onnx(path)


def test_a_hard_link_to_data_elsewhere_is_refused(model_dir):
    path = _save_external(_layer(), model_dir)
    try:
        os.link(model_dir.parent / "secret.bin", model_dir / "hard.bin")
    except OSError as exc:  # pragma: no cover - file systems without hard links
        pytest.skip(f"cannot make a hard link here: {exc}")
    _point_to(path, "hard.bin")
    with pytest.raises(ValueError, match=r"multiple hard links"):
        interop.from_onnx(path)


def test_external_data_needs_an_onnx_whose_loader_refuses_links(model_dir, monkeypatch):
    path = _save_external(_layer(), model_dir)
    plain = model_dir / "plain.onnx"
    onnx.save_model(interop.to_onnx(_layer()), os.fspath(plain))
    monkeypatch.setattr(onnx, "__version__", "1.20.1")
    with pytest.raises(ValueError, match=r"reads only with onnx >= 1\.21 .*this is onnx "
                                         r"1\.20\.1: upgrade onnx"):
        interop.from_onnx(path)
    assert isinstance(interop.from_onnx(plain), grucy.GRU)  # no external data: fine
