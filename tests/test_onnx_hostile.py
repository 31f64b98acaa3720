"""Issue 15's ONNX graphs: every graph walk bounded (cycles), every size a model declares
checked before anything is allocated or read (input dims, initializer dims, external
data lengths), and one exception family: ValueError naming the attribute or input.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import grucy
from grucy import interop

from conftest import importorskip

onnx = importorskip("onnx")
from onnx import TensorProto, external_data_helper, helper, numpy_helper  # noqa: E402


def _two_layers():
    return interop.to_onnx(grucy.GRU(3, 3, 2, seed=0))


def _gru_nodes(model):
    return [n for n in model.graph.node if n.op_type == "GRU"]


def _quick(fn, seconds=5.0):
    start = time.perf_counter()
    try:
        return fn()
    finally:
        assert time.perf_counter() - start < seconds


# -- cycles ----------------------------------------------------------------------------------
def test_a_squeeze_fed_by_its_own_output_is_refused():
    model = _two_layers()
    squeeze = next(n for n in model.graph.node if n.op_type == "Squeeze")
    squeeze.input[0] = squeeze.output[0]  # y_l0 = Squeeze(y_l0)
    with pytest.raises(ValueError, match="from a cycle"):
        _quick(lambda: interop.from_onnx(model))


def test_two_identity_nodes_in_a_loop_are_refused():
    model = _two_layers()
    node1 = _gru_nodes(model)[1]
    model.graph.node.extend([helper.make_node("Identity", ["loop_b"], ["loop_a"]),
                             helper.make_node("Identity", ["loop_a"], ["loop_b"])])
    node1.input[0] = "loop_a"
    with pytest.raises(ValueError, match="from a cycle"):
        _quick(lambda: interop.from_onnx(model))


def test_a_long_chain_of_identities_is_walked_once():
    model = _two_layers()
    node1 = _gru_nodes(model)[1]
    name = node1.input[0]
    for i in range(2000):
        model.graph.node.append(helper.make_node("Identity", [name], [f"id{i}"]))
        name = f"id{i}"
    node1.input[0] = name
    layer = _quick(lambda: interop.from_onnx(model))
    assert layer.num_layers == 2


# -- declared sizes ------------------------------------------------------------------------
def test_huge_declared_input_dims_drive_no_allocation():
    model = interop.to_onnx(grucy.GRU(3, 4, 2, seed=0), batch_size=2**31 - 1,
                            seq_len=2**31 - 1, opset=17)
    layer = _quick(lambda: interop.from_onnx(model))  # a small probe, not T*B*D*H values
    assert layer.num_layers == 2


def test_an_initializer_declaring_huge_dims_is_refused_naming_it():
    model = _two_layers()
    t = next(t for t in model.graph.initializer if t.name == "W_l0")
    del t.dims[:]
    t.dims.extend([2**40, 2**20])
    with pytest.raises(ValueError, match=r"initializer 'W_l0'.*needs about .* more than"):
        _quick(lambda: interop.from_onnx(model))


@pytest.mark.parametrize("data_type, match", [
    (TensorProto.STRING, "holds strings"),
    (999, "data_type 999"),
    (TensorProto.INT32, "damaged|must be float32 or float64"),
])
def test_initializers_of_other_data_types_are_refused_naming_them(data_type, match):
    model = _two_layers()
    t = next(t for t in model.graph.initializer if t.name == "R_l0")
    t.data_type = data_type
    with pytest.raises(ValueError, match=match):
        interop.from_onnx(model)


# -- attributes: ValueError naming the attribute -------------------------------------------
def _set_attribute(node, attribute):
    for i, a in enumerate(node.attribute):
        if a.name == attribute.name:
            del node.attribute[i]
            break
    node.attribute.append(attribute)


@pytest.mark.parametrize("name, value, match", [
    ("hidden_size", "three", r"attribute 'hidden_size' must be of type int"),
    ("hidden_size", [3, 3], r"attribute 'hidden_size' must be of type int"),
    ("layout", 1.5, r"attribute 'layout' must be of type int"),
    ("layout", 7, r"layout=7"),
    ("direction", 1, r"attribute 'direction' must be of type string"),
    ("direction", "sideways", r"direction='sideways'"),
    ("linear_before_reset", "yes", r"attribute 'linear_before_reset' must be of type int"),
    ("activations", "Sigmoid", r"attribute 'activations' must be of type strings"),
    ("activations", ["Relu", "Tanh"], r"activations=\['Relu', 'Tanh'\]"),
    ("clip", "x", r"sets clip="),
])
def test_bad_gru_attributes_raise_value_error_naming_them(name, value, match):
    model = _two_layers()
    _set_attribute(_gru_nodes(model)[0], helper.make_attribute(name, value))
    with pytest.raises(ValueError, match=match):
        interop.from_onnx(model)


@pytest.mark.parametrize("op, name, value, match", [
    ("Squeeze", "axes", "one", "cannot follow Squeeze|must be of type ints"),
    ("Transpose", "perm", 3, "must be of type ints"),
])
def test_bad_attributes_between_gru_nodes_raise_value_error(op, name, value, match):
    layer = grucy.GRU(3, 3, 2, bidirectional=op == "Transpose", seed=0)
    model = interop.to_onnx(layer)
    node = next(n for n in model.graph.node if n.op_type == op)
    if op == "Squeeze":
        del node.input[1:]
    _set_attribute(node, helper.make_attribute(name, value))
    with pytest.raises(ValueError, match=match):
        interop.from_onnx(model)


def test_a_constant_node_whose_value_is_not_a_tensor_is_refused():
    model = _two_layers()
    model.graph.node.insert(0, helper.make_node("Constant", [], ["c"], value_int=3))
    model.graph.node[0].attribute[0].name = "value"
    with pytest.raises(ValueError, match="attribute 'value' must be a tensor"):
        interop.from_onnx(model)


def test_nodes_without_inputs_or_outputs_raise_value_error():
    model = _two_layers()
    squeeze = next(n for n in model.graph.node if n.op_type == "Squeeze")
    out = squeeze.output[0]
    del squeeze.input[:]
    with pytest.raises(ValueError, match="has no input"):
        interop.from_onnx(model)
    model = _two_layers()
    node = _gru_nodes(model)[0]
    node.name = ""
    del node.output[:]
    with pytest.raises(ValueError):
        interop.from_onnx(model)
    assert out


# -- external data: lengths and sizes checked before onnx reads ----------------------------
def _external(tmp_path, *, length=True, data=None, dims=None):
    layer = grucy.GRU(3, 4, seed=0)
    model = interop.to_onnx(layer)
    W = next(t for t in model.graph.initializer if t.name == "W_l0")
    raw = numpy_helper.to_array(W).tobytes()
    (tmp_path / "w.bin").write_bytes(raw if data is None else b"")
    if data is not None:
        with open(tmp_path / "w.bin", "wb") as f:
            f.truncate(data)  # sparse: no disk, no read unless someone reads it
    W.ClearField("float_data")
    W.raw_data = raw
    external_data_helper.set_external_data(W, "w.bin", length=len(raw) if length else None)
    W.ClearField("raw_data")
    if dims is not None:
        del W.dims[:]
        W.dims.extend(dims)
        if length:
            for e in W.external_data:
                if e.key == "length":
                    e.value = str(int(np.prod(dims)) * 4)
    path = tmp_path / "m.onnx"
    onnx.save_model(model, os.fspath(path))
    return path, layer


def test_external_data_of_the_right_length_converts(tmp_path):
    path, layer = _external(tmp_path)
    np.testing.assert_array_equal(interop.from_onnx(path).state_dict()["weight_ih_l0"],
                                  layer.state_dict()["weight_ih_l0"])
    path, layer = _external(tmp_path, length=False)
    np.testing.assert_array_equal(interop.from_onnx(path).state_dict()["weight_ih_l0"],
                                  layer.state_dict()["weight_ih_l0"])


def test_a_huge_external_file_without_a_length_is_never_read(tmp_path):
    """The issue's 1.5 GB data file with no length: refused from its size alone."""
    path, _ = _external(tmp_path, length=False, data=1_500_000_000)
    with pytest.raises(ValueError, match=r"initializer 'W_l0' is damaged: its external "
                                         r"data .* no length: 1500000000 bytes"):
        _quick(lambda: interop.from_onnx(path), 2.0)


def test_a_length_other_than_the_dims_need_is_refused(tmp_path):
    path, _ = _external(tmp_path)
    model = onnx.load(os.fspath(path), load_external_data=False)
    W = next(t for t in model.graph.initializer if t.name == "W_l0")
    for e in W.external_data:
        if e.key == "length":
            e.value = str(1_500_000_000)
    onnx.save_model(model, os.fspath(path))
    with pytest.raises(ValueError, match="external data length is 1500000000 bytes, its "
                                         "dims .* need 144"):
        interop.from_onnx(path)


_CHILD = textwrap.dedent("""
    import resource, sys
    from grucy import interop
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        interop.from_onnx(sys.argv[1])
    except ValueError as exc:
        print("ValueError:", type(exc).__name__, str(exc)[:300])
    else:
        print("converted")
""")


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS as on Linux")
def test_under_a_memory_limit_a_huge_external_tensor_is_refused_not_a_crash(tmp_path):
    """Dims and length that agree on 1.5 GB, in a process limited to its current use
    plus 512 MiB: refused (SizeLimitError, a ValueError) before onnx reads, never a
    signal."""
    path, _ = _external(tmp_path, data=1_500_000_000, dims=[375_000_000])
    probe = subprocess.run([sys.executable, "-c", "import grucy.interop, onnx, resource;"
                            "print(open('/proc/self/statm').read().split()[0])"],
                           capture_output=True, text=True, check=True)
    mapped = int(probe.stdout) * os.sysconf("SC_PAGE_SIZE")
    proc = subprocess.run([sys.executable, "-c", _CHILD, os.fspath(path),
                           str(mapped + (512 << 20))], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.startswith("ValueError: SizeLimitError"), proc.stdout
    assert "external data (1500000000 bytes) needs about" in proc.stdout
