"""ONNX interop: grucy.interop.to_onnx / from_onnx against ONNX Runtime and onnx.reference.

ONNX Runtime is the oracle where it can run the model: float32, layout 0.  It has no
float64 and no layout=1 GRU kernel; those cases use onnx's own reference evaluator
(which ignores sequence_lens, so it only sees full-length sequences).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import assert_close, importorskip

onnx = importorskip("onnx")
ort = importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import grucy  # noqa: E402
from grucy import interop  # noqa: E402

CONFIGS = {
    "after": dict(),
    "before": dict(reset_after=False),
    "bidirectional": dict(bidirectional=True),
    "stack_before_batch_first": dict(num_layers=2, reset_after=False, batch_first=True),
    "stack_bidirectional_no_bias": dict(num_layers=3, bidirectional=True, bias=False),
    "all_batch_first": dict(num_layers=2, bidirectional=True, batch_first=True),
}


def _session(model):
    return ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"])


def _inputs(rng, layer, T=5, B=3, dtype=np.float32):
    seq = (B, T) if layer.batch_first else (T, B)
    x = rng.standard_normal(seq + (layer.input_size,)).astype(dtype)
    h0 = rng.standard_normal((layer.num_layers * layer.num_directions, B,
                              layer.hidden_size)).astype(dtype)
    return x, h0


def _same_weights(a, b):
    assert (a.bias, a.num_layers, a.bidirectional, a.reset_after, a.dtype) == (
        b.bias, b.num_layers, b.bidirectional, b.reset_after, b.dtype)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


# --------------------------------------------------------------------------------------
# to_onnx

@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_onnx_runtime_reproduces_grucy(name, lengths, rng):
    layer = grucy.GRU(4, 3, seed=0, **CONFIGS[name])
    model = interop.to_onnx(layer, h0=True, lengths=lengths)
    assert [i.name for i in model.graph.input] == ["x", "h0"] + (["lengths"] if lengths else [])
    assert [o.name for o in model.graph.output] == ["y", "h_n"]
    session = _session(model)
    # Dynamic batch and time: one model, two shapes.
    for T, B in ((5, 3), (2, 4)):
        x, h0 = _inputs(rng, layer, T, B)
        feed = {"x": x, "h0": h0}
        lens = None
        if lengths:
            lens = np.array([T, 1, T - 1, 2][:B], dtype=np.int64)
            feed["lengths"] = lens
        y, h_n = session.run(None, feed)
        y_ref, h_ref = layer.forward(x, h0, lengths=lens, training=False)
        assert_close(y, y_ref)
        assert_close(h_n, h_ref)
        if lengths:  # zero past the end, exactly as grucy
            np.testing.assert_array_equal(y == 0, y_ref == 0)


def test_to_onnx_without_h0_fixed_dims_and_path(tmp_path, rng):
    layer = grucy.GRU(4, 3, 2, bidirectional=True, seed=1)
    path = tmp_path / "gru.onnx"
    model = interop.to_onnx(layer, path, batch_size=3, seq_len=5)
    assert sorted(os.listdir(tmp_path)) == ["gru.onnx"]  # no temporary file left behind
    loaded = onnx.load(path)
    assert loaded.SerializeToString() == model.SerializeToString()
    onnx.checker.check_model(loaded, full_check=True)
    dims = [d.dim_value for d in loaded.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [5, 3, 4]
    x, _ = _inputs(rng, layer)
    y, h_n = _session(loaded).run(None, {"x": x})
    y_ref, h_ref = layer.forward(x, training=False)
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)


@pytest.mark.parametrize("name", ["before", "all_batch_first"])
def test_float64_export_runs_in_the_onnx_reference(name, rng):
    """ONNX Runtime has no float64 GRU; the model is valid ONNX and onnx.reference runs it."""
    layer = grucy.GRU(4, 3, seed=2, dtype=np.float64, **CONFIGS[name])
    model = interop.to_onnx(layer, h0=True)
    x, h0 = _inputs(rng, layer, dtype=np.float64)
    y, h_n = ReferenceEvaluator(model).run(None, {"x": x, "h0": h0})
    y_ref, h_ref = layer.forward(x, h0, training=False)
    assert y.dtype == np.float64
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_onnx_round_trips_are_bitwise(name, dtype):
    layer = grucy.GRU(4, 3, seed=3, dtype=dtype, **CONFIGS[name])
    model = interop.to_onnx(layer, h0=True, lengths=True)
    back = interop.from_onnx(model)
    _same_weights(back, layer)
    assert back.batch_first == layer.batch_first
    again = interop.to_onnx(back, h0=True, lengths=True)
    assert again.graph.SerializeToString() == model.graph.SerializeToString()


def test_to_onnx_refusals():
    with pytest.raises(ValueError, match="opset"):
        interop.to_onnx(grucy.GRU(2, 3), opset=13)
    with pytest.raises(ValueError, match="batch_size"):
        interop.to_onnx(grucy.GRU(2, 3), batch_size=0)
    with pytest.raises(TypeError, match="grucy GRU layer"):
        interop.to_onnx("gru")


def test_to_onnx_never_replaces_a_good_file_with_non_finite_weights(tmp_path):
    # grucy.save refuses such a layer; to_onnx used to write it over the good model,
    # and from_onnx then refused the file.
    path = tmp_path / "m.onnx"
    g = grucy.GRU(2, 3, seed=0)
    interop.to_onnx(g, path)
    before = path.read_bytes()
    g.parameters()[1][0, 0] = np.nan
    with pytest.raises(ValueError, match="parameter 'weight_hh_l0' contains NaN or inf"):
        interop.to_onnx(g, path)
    assert path.read_bytes() == before


# --------------------------------------------------------------------------------------
# from_onnx on hand-built graphs

def _gru_model(rng, *, D=1, H=3, I=4, layout=0, lbr=1, bias=True, seq_lens=False,
               init_h=False, dtype=np.float32, T=5, B=3, **attrs):
    """One ONNX GRU node with random constant weights; inputs X, [sequence_lens], [initial_h]."""
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    inits = [numpy_helper.from_array(rng.standard_normal((D, 3 * H, I)).astype(dtype), "W"),
             numpy_helper.from_array(rng.standard_normal((D, 3 * H, H)).astype(dtype), "R")]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal((D, 6 * H)).astype(dtype),
                                             "B"))
    xs = [T, B, I] if layout == 0 else [B, T, I]
    inputs = [helper.make_tensor_value_info("X", elem, xs)]
    node_in = ["X", "W", "R", "B" if bias else "", "", ""]
    if seq_lens:
        inputs.append(helper.make_tensor_value_info("L", TensorProto.INT32, [B]))
        node_in[4] = "L"
    if init_h:
        shape = [D, B, H] if layout == 0 else [B, D, H]
        inputs.append(helper.make_tensor_value_info("H0", elem, shape))
        node_in[5] = "H0"
    while node_in[-1] == "":
        node_in.pop()
    attrs.setdefault("direction", "bidirectional" if D == 2 else "forward")
    node = helper.make_node("GRU", node_in, ["Y", "Y_h"], hidden_size=H, layout=layout,
                            linear_before_reset=lbr, **attrs)
    ys = [T, D, B, H] if layout == 0 else [B, T, D, H]
    hs = [D, B, H] if layout == 0 else [B, D, H]
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info("Y", elem, ys),
                               helper.make_tensor_value_info("Y_h", elem, hs)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _grucy_as_onnx_outputs(layer, x, h0, lengths, layout):
    """grucy's (y, h_n) in the shapes of the node's Y and Y_h (docs/design.md, section 2)."""
    y, h_n = layer.forward(x, h0, lengths=lengths, training=False)
    D, H = layer.num_directions, layer.hidden_size
    if layout == 0:
        T, B = y.shape[:2]
        return y.reshape(T, B, D, H).transpose(0, 2, 1, 3), h_n
    B, T = y.shape[:2]
    return y.reshape(B, T, D, H), h_n.transpose(1, 0, 2)


@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("bias", [True, False])
def test_from_onnx_single_node_matches_onnx_runtime(D, lbr, bias, rng):
    model = _gru_model(rng, D=D, lbr=lbr, bias=bias, seq_lens=True, init_h=True)
    layer = interop.from_onnx(model)
    assert (layer.reset_after, layer.num_directions, layer.bias) == (bool(lbr), D, bias)
    assert layer.batch_first is False
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    lengths = np.array([2, 5, 1], np.int32)
    h0 = rng.standard_normal((D, 3, 3)).astype(np.float32)
    Y, Y_h = _session(model).run(None, {"X": x, "L": lengths, "H0": h0})
    y, h_n = _grucy_as_onnx_outputs(layer, x, h0, lengths, 0)
    assert_close(y, Y)
    assert_close(h_n, Y_h)


@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("lbr", [0, 1])
def test_from_onnx_layout_1_matches_onnx_reference(D, lbr, rng):
    model = _gru_model(rng, D=D, lbr=lbr, layout=1, init_h=True, dtype=np.float64)
    layer = interop.from_onnx(model)
    assert layer.batch_first is True and layer.dtype == np.float64
    x = rng.standard_normal((3, 5, 4))
    h0_onnx = rng.standard_normal((3, D, 3))  # layout 1: (B, D, H)
    Y, Y_h = ReferenceEvaluator(model).run(None, {"X": x, "H0": h0_onnx})
    y, h_n = _grucy_as_onnx_outputs(layer, x, h0_onnx.transpose(1, 0, 2), None, 1)
    assert_close(y, Y)
    assert_close(h_n, Y_h)


def test_from_onnx_reads_paths_and_bytes_and_explicit_defaults(tmp_path, rng):
    model = _gru_model(rng, D=2, activations=["Sigmoid", "Tanh", "Sigmoid", "Tanh"])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    a, b, c = (interop.from_onnx(m) for m in (model, str(path), model.SerializeToString()))
    _same_weights(a, b)
    _same_weights(a, c)


def test_from_onnx_accepts_a_zero_constant_initial_h(rng):
    model = _gru_model(rng, D=1)
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 3, 3), np.float32),
                                                           "H0c"))
    model.graph.node[0].input.extend(["", "H0c"])
    layer = interop.from_onnx(model)
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    Y, Y_h = _session(model).run(None, {"X": x})
    y, h_n = _grucy_as_onnx_outputs(layer, x, None, None, 0)
    assert_close(y, Y)
    assert_close(h_n, Y_h)


def test_from_onnx_of_a_torch_export(rng):
    """The legacy (TorchScript) exporter's stacks: Slice of h0, Squeeze / Transpose+Reshape."""
    torch = importorskip("torch")
    import io
    import warnings

    torch.manual_seed(0)
    module = torch.nn.GRU(4, 3, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(3, 5, 4)
    h = torch.randn(4, 3, 3)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x, h), buf, dynamo=False, input_names=["x", "h0"],
                          output_names=["y", "h_n"], opset_version=17)
    layer = interop.from_onnx(buf.getvalue())
    assert layer.batch_first is True and layer.num_layers == 2
    for k, v in module.state_dict().items():
        np.testing.assert_array_equal(layer.state_dict()[k], v.numpy(), err_msg=k)
    y, h_n = _session(onnx.load_from_string(buf.getvalue())).run(
        None, {"x": x.numpy(), "h0": h.numpy()})
    y_ref, h_ref = layer.forward(x.numpy(), h.numpy(), training=False)
    assert_close(y_ref, y)
    assert_close(h_ref, h_n)


# --------------------------------------------------------------------------------------
# from_onnx refusals

@pytest.mark.parametrize("kwargs, setting", [
    (dict(direction="reverse"), "direction='reverse'"),
    (dict(clip=5.0), "clip=5.0"),
    (dict(activations=["Sigmoid", "Relu"]), "activations="),
    (dict(activation_alpha=[1.0]), "activation_alpha"),
    (dict(activation_beta=[1.0]), "activation_beta"),
])
def test_from_onnx_refuses_attributes(kwargs, setting, rng):
    model = _gru_model(rng, **kwargs)
    with pytest.raises(ValueError, match=setting.replace("(", r"\(")):
        interop.from_onnx(model)


def test_from_onnx_refuses_constant_run_time_inputs(rng):
    model = _gru_model(rng)
    model.graph.initializer.append(numpy_helper.from_array(np.full(3, 5, np.int32), "Lc"))
    model.graph.node[0].input.extend(["Lc"])
    with pytest.raises(ValueError, match="sequence_lens is a constant"):
        interop.from_onnx(model)
    model = _gru_model(rng)
    model.graph.initializer.append(numpy_helper.from_array(np.ones((1, 3, 3), np.float32),
                                                           "Hc"))
    model.graph.node[0].input.extend(["", "Hc"])
    with pytest.raises(ValueError, match="initial_h is a constant"):
        interop.from_onnx(model)


def test_from_onnx_refuses_weights_fed_at_run_time(rng):
    model = _gru_model(rng)
    w = model.graph.initializer[0]
    del model.graph.initializer[0]
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT,
                                                           list(w.dims)))
    with pytest.raises(ValueError, match="input W .* not a constant"):
        interop.from_onnx(model)


def _stack(layer, between):
    """to_onnx of a 2-layer layer with the link between the nodes replaced by ``between``."""
    model = interop.to_onnx(layer)
    graph = model.graph
    node1 = [n for n in graph.node if n.op_type == "GRU"][1]
    new_nodes = between(node1)
    node1.input[0] = new_nodes[-1].output[0]
    idx = list(graph.node).index(node1)
    for k, n in enumerate(new_nodes):
        graph.node.insert(idx + k, n)
    return model


def test_from_onnx_refuses_broken_stacks(rng):
    layer = grucy.GRU(3, 3, 2, seed=0)  # I == H: a wrong link still has the right shape
    # A non-reshaping op between the nodes.
    relu = _stack(layer, lambda n: [helper.make_node("Relu", [n.input[0]], ["relu_out"])])
    with pytest.raises(ValueError, match="Relu node"):
        interop.from_onnx(relu)
    # A transpose that scrambles time and batch (T == B in the probe would hide nothing:
    # the probe has distinct entries).
    scrambled = _stack(layer, lambda n: [
        helper.make_node("Transpose", [n.input[0]], ["tr_out"], perm=[1, 0, 2])])
    with pytest.raises(ValueError, match="not the output of"):
        interop.from_onnx(scrambled)
    # Mixed forms.
    model = interop.to_onnx(layer)
    for a in [n for n in model.graph.node if n.op_type == "GRU"][1].attribute:
        if a.name == "linear_before_reset":
            a.i = 0
    with pytest.raises(ValueError, match="linear_before_reset"):
        interop.from_onnx(model)
    # sequence_lens on one node only.
    model = interop.to_onnx(layer, lengths=True)
    gru1 = [n for n in model.graph.node if n.op_type == "GRU"][1]
    gru1.input[4] = ""
    with pytest.raises(ValueError, match="sequence_lens"):
        interop.from_onnx(model)


def test_from_onnx_refuses_non_models(rng):
    with pytest.raises(TypeError, match="model_or_path"):
        interop.from_onnx(3)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(ValueError, match="no GRU node"):
        interop.from_onnx(helper.make_model(graph))
