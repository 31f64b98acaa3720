"""Exact exchange with ONNX: :func:`to_onnx` writes a grucy GRU as ONNX GRU nodes,
:func:`from_onnx` reads them back (checking every node and what links them).

onnx is imported inside the functions (this module imports without it).
"""

from __future__ import annotations

import os

from typing import TYPE_CHECKING, Any, Optional, Type, Union, overload

import numpy as np

from .._base import GRUBase
from .._limits import check_memory
from .._validation import _flag, _positive_int
from .._version import __version__
from ..io import atomic_write
from ._layers import _G, _build, _check_gru, _sfx, _swap_rz

if TYPE_CHECKING:
    import grucy.layer

__all__ = ["from_onnx", "to_onnx"]

_DEFAULT_OPSET = 17  # GRU-14 (layout attribute) and the axes-as-input Slice/Squeeze of 13


def _onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("grucy.interop's ONNX converters need onnx "
                          "(pip install 'grucy[onnx]')") from exc
    return onnx


def to_onnx(gru: GRUBase, path: Optional[Union[str, "os.PathLike[str]"]] = None, *,
            h0: bool = False, lengths: bool = False, batch_size: Optional[int] = None,
            seq_len: Optional[int] = None, opset: int = _DEFAULT_OPSET) -> Any:
    """An ONNX model computing grucy GRU ``gru``'s forward, with grucy's own shapes.

    Parameters
    ----------
    gru : grucy.GRU or grucy.reference.GRU
        Either form (ONNX ``linear_before_reset`` = ``reset_after``), any layers,
        directions and layout.  Dropout is a training-time operation and is not exported.
    path : str or os.PathLike, optional
        Also write the model there (atomically: an existing file is replaced only by a
        complete one).
    h0 : bool, default False
        Add the input ``h0`` (L*D, B, H); without it the initial state is 0.
    lengths : bool, default False
        Add the input ``lengths`` (B,) int64, each in [1, T]: as in grucy, ``y`` is 0 past
        each sequence's end, ``h_n`` is the state at its last valid step and the reverse
        direction starts there (ONNX ``sequence_lens``).
    batch_size, seq_len : int, optional
        Fix these dimensions; by default they are symbolic (``"B"``, ``"T"``).
    opset : int, default 17
        Default-domain opset, at least 14.

    Returns
    -------
    onnx.ModelProto
        Inputs ``x`` ((T, B, I), or (B, T, I) when ``gru.batch_first``), then ``h0`` and
        ``lengths`` when asked for; outputs ``y`` (y's grucy shape) and ``h_n``
        (L*D, B, H).  Checked with ``onnx.checker`` (full check).  ONNX Runtime runs the
        float32 models; it has no float64 GRU kernel (the model is still valid ONNX).
    """
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    _check_gru(gru, "ONNX")
    opset = _positive_int("opset", opset)
    newest = onnx.defs.onnx_opset_version()
    if not 14 <= opset <= newest:
        raise ValueError(f"opset must be at least 14 (GRU with the layout attribute) and at "
                         f"most {newest} (the newest this onnx {onnx.__version__} knows), "
                         f"got {opset}")
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if value is not None:
            _positive_int(name, value)
    h0, lengths = _flag("h0", h0), _flag("lengths", lengths)
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be None or a path (str or os.PathLike), got "
                        f"{type(path).__name__} {path!r}")
    L, D, H, I = gru.num_layers, gru.num_directions, gru.hidden_size, gru.input_size
    elem = TensorProto.FLOAT if gru.dtype == np.float32 else TensorProto.DOUBLE
    Bdim = "B" if batch_size is None else int(batch_size)
    Tdim = "T" if seq_len is None else int(seq_len)
    seq = [Bdim, Tdim] if gru.batch_first else [Tdim, Bdim]

    inputs = [helper.make_tensor_value_info("x", elem, seq + [I])]
    nodes, inits = [], []

    def const(name, values, dtype=np.int64):
        inits.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    if h0:
        inputs.append(helper.make_tensor_value_info("h0", elem, [L * D, Bdim, H]))
    seq_lens = ""
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT64, [Bdim]))
        seq_lens = "sequence_lens"  # ONNX wants int32
        nodes.append(helper.make_node("Cast", ["lengths"], [seq_lens], to=TensorProto.INT32))
    cur = "x"
    if gru.batch_first:
        nodes.append(helper.make_node("Transpose", [cur], ["x_time_major"], perm=[1, 0, 2]))
        cur = "x_time_major"
    if D > 1:
        const("shape_TB_", [0, 0, -1])
    states = []
    for k in range(L):
        ws, rs, bs = [], [], []
        for d in range(D):
            s = _sfx(k, d)
            ws.append(_swap_rz(gru._params[f"weight_ih_{s}"]))
            rs.append(_swap_rz(gru._params[f"weight_hh_{s}"]))
            if gru.bias:
                bs.append(np.concatenate([_swap_rz(gru._params[f"bias_ih_{s}"]),
                                          _swap_rz(gru._params[f"bias_hh_{s}"])]))
        gate_inputs = [cur, const(f"W_l{k}", np.stack(ws), gru.dtype),
                       const(f"R_l{k}", np.stack(rs), gru.dtype),
                       const(f"B_l{k}", np.stack(bs), gru.dtype) if gru.bias else "",
                       seq_lens]
        if h0:
            init = f"h0_l{k}"
            nodes.append(helper.make_node(
                "Slice", ["h0", const(f"h0_start_l{k}", [k * D]),
                          const(f"h0_end_l{k}", [(k + 1) * D]), const("axis_0", [0])],
                [init]))
            gate_inputs.append(init)
        while gate_inputs[-1] == "":
            gate_inputs.pop()
        Y, Y_h = f"Y_l{k}", f"Y_h_l{k}"
        nodes.append(helper.make_node(
            "GRU", gate_inputs, [Y, Y_h], name=f"gru_l{k}", hidden_size=H,
            direction="bidirectional" if D == 2 else "forward",
            linear_before_reset=int(gru.reset_after), layout=0))
        states.append(Y_h)
        last = k == L - 1
        out = "y" if last and not gru.batch_first else f"y_l{k}"
        if D == 1:
            # (T, 1, B, H) -> (T, B, H)
            nodes.append(helper.make_node("Squeeze", [Y, const("axis_1", [1])], [out]))
        else:
            # (T, D, B, H) -> (T, B, D, H) -> (T, B, D*H), directions concatenated
            nodes.append(helper.make_node("Transpose", [Y], [f"Y_tbdh_l{k}"],
                                          perm=[0, 2, 1, 3]))
            nodes.append(helper.make_node("Reshape", [f"Y_tbdh_l{k}", "shape_TB_"], [out]))
        cur = out
    if gru.batch_first:
        nodes.append(helper.make_node("Transpose", [cur], ["y"], perm=[1, 0, 2]))
    if L == 1:
        nodes.append(helper.make_node("Identity", [states[0]], ["h_n"]))
    else:
        nodes.append(helper.make_node("Concat", states, ["h_n"], axis=0))
    # inits may hold a name twice (axis constants shared by layers): keep the first.
    seen, unique = set(), []
    for t in inits:
        if t.name not in seen:
            seen.add(t.name)
            unique.append(t)
    outputs = [helper.make_tensor_value_info("y", elem, seq + [D * H]),
               helper.make_tensor_value_info("h_n", elem, [L * D, Bdim, H])]
    graph = helper.make_graph(nodes, "grucy_gru", inputs, outputs, unique)
    model = helper.make_model_gen_version(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="grucy",
        doc_string=f"grucy {type(gru).__name__}: {gru!r}")
    model.producer_version = __version__
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        atomic_write(path, [model.SerializeToString()])
    return model


# Ops allowed between two stacked GRU nodes; what they do is checked on a probe array,
# of the graph's declared sizes when they make at most _MAX_PROBE values.
_RESHAPING_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity"}
_MAX_PROBE = 1 << 20


class _OnnxGraph:
    """Constants, producers and consumers of an ONNX graph (the outer graph only)."""

    def __init__(self, model):
        self.graph = model.graph
        self.consts = {t.name: _tensor_array(t, f"initializer {t.name!r}")
                       for t in self.graph.initializer}
        self.inputs = {i.name for i in self.graph.input} - set(self.consts)
        self.producer = {}
        for node in self.graph.node:
            for out in node.output:
                self.producer[out] = node
            if (node.op_type == "Constant" and node.domain in ("", "ai.onnx")
                    and node.output):
                attr = {a.name: a for a in node.attribute}
                what = f"Constant node {node.name or node.output[0]!r}"
                if "value" in attr:
                    if attr["value"].type != 4:  # AttributeProto.TENSOR
                        raise ValueError(f"{what}: attribute 'value' must be a tensor, got "
                                         f"attribute type {attr['value'].type}")
                    self.consts[node.output[0]] = _tensor_array(attr["value"].t, what)

    def const(self, name):
        return self.consts.get(name)


def _tensor_array(tensor, what):
    """The values of an in-memory TensorProto (never a file: see :func:`_load_onnx`)."""
    from onnx import external_data_helper, numpy_helper

    if external_data_helper.uses_external_data(tensor):
        location = {e.key: e.value for e in tensor.external_data}.get("location")
        raise ValueError(f"{what} keeps its data in an external file ({location!r}) that "
                         f"was not loaded; pass the model's path to from_onnx (the data is "
                         f"then read from the model's directory) or load it with "
                         f"onnx.load(path) first")
    _check_tensor_size(tensor, what)
    try:
        return numpy_helper.to_array(tensor)
    except Exception as exc:  # onnx's converter raises what its data happens to trigger
        raise ValueError(f"{what} is damaged or of an unsupported type "
                         f"(data_type {tensor.data_type}, dims {_dims_text(tensor)}): "
                         f"{type(exc).__name__}: {str(exc)[:300]}") from None


def _dims_text(tensor):
    dims = list(tensor.dims)
    return str(dims) if len(dims) <= 8 else f"{dims[:8]}... ({len(dims)} dims)"


def _tensor_bytes(tensor, what):
    """The bytes a tensor's declared dims and data type need (ValueError for negative
    dims or a type without a fixed size: strings, undefined)."""
    from onnx import helper

    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise ValueError(f"{what} has negative dims {_dims_text(tensor)}")
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:
        raise ValueError(f"{what} has data_type {tensor.data_type}, which grucy does not "
                         f"read") from None
    if tensor.data_type == 8:  # STRING: no fixed size
        raise ValueError(f"{what} holds strings (data_type 8), which grucy does not read")
    n = 1
    for d in dims:
        n *= d
    return n * itemsize


def _check_tensor_size(tensor, what):
    """Before onnx converts (allocates) a tensor: its declared size against the memory
    limit (SizeLimitError naming the tensor and the limit)."""
    nbytes = _tensor_bytes(tensor, what)
    check_memory(lambda: f"{what} (dims {_dims_text(tensor)})", nbytes)


# onnx 1.21 made its external-data loader refuse symbolic links and hard links out of the
# model's directory (CVE-2026-27489) and unknown external-data keys (CVE-2026-34445).
_ONNX_SAFE_EXTERNAL_DATA = (1, 21)


def _onnx_version(onnx):
    major, minor = onnx.__version__.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _load_onnx(onnx, model_or_path):
    """An onnx.ModelProto from a ModelProto, bytes or a path, with clear errors.

    A path is read with onnx's own loader, external data included: onnx refuses data
    files outside the model's directory (``..``, absolute paths, symbolic links), missing
    files and offsets or lengths beyond a file's end; those refusals are re-raised as
    ValueError naming the model.  Bytes and ModelProto objects never make grucy read a
    file: tensors still pointing to external data are refused (:func:`_tensor_array`).
    """
    from google.protobuf.message import DecodeError
    from onnx import external_data_helper

    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    if isinstance(model_or_path, (bytes, bytearray)):
        check_memory(lambda: f"parsing an ONNX model of {len(model_or_path)} bytes",
                     _PARSE_FACTOR * len(model_or_path))
        try:
            return onnx.load_from_string(bytes(model_or_path))
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise ValueError(f"model_or_path: {len(model_or_path)} bytes that are not an "
                             f"ONNX model ({exc})") from None
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise TypeError(f"model_or_path must be an onnx.ModelProto, a path or bytes, got "
                        f"{type(model_or_path).__name__}")
    path = os.fspath(model_or_path)
    if os.path.isfile(path):  # (else onnx.load reports the path)
        size = os.path.getsize(path)
        check_memory(lambda: f"{path}: parsing an ONNX model of {size} bytes",
                     _PARSE_FACTOR * size)
    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, RuntimeError) as exc:
        raise ValueError(f"{path}: not an ONNX model, or a truncated or damaged one "
                         f"({exc})") from None
    # every tensor onnx's loader would read (its own walk, subgraphs and attributes too)
    every_tensor = getattr(external_data_helper, "_get_all_tensors",
                           lambda m: m.graph.initializer)
    if _onnx_version(onnx) < _ONNX_SAFE_EXTERNAL_DATA and any(
            external_data_helper.uses_external_data(t) for t in every_tensor(model)):
        raise ValueError(f"{path}: the model keeps weights in external data files, which "
                         f"grucy reads only with onnx >= 1.21 (earlier loaders follow "
                         f"symbolic links out of the model's directory); this is onnx "
                         f"{onnx.__version__}: upgrade onnx")
    base = os.path.dirname(os.path.abspath(path))
    _check_external_sizes(external_data_helper, every_tensor(model), base, path)
    try:
        external_data_helper.load_external_data_for_model(model, base)
    except (ValueError, OSError, onnx.checker.ValidationError) as exc:
        raise ValueError(f"{path}: the model's external data cannot be read: {exc} (external "
                         f"data must be complete regular files inside the model's "
                         f"directory, named by relative paths)") from None
    return model


# A protobuf parse holds the message and its decoded fields: at most this many bytes
# per byte of the serialised model (the raw data of initializers once more, the rest
# as Python-visible objects on access).
_PARSE_FACTOR = 3


def _check_external_sizes(external_data_helper, tensors, base, path):
    """Before onnx reads any external data: each tensor's ``length`` (or, without one,
    what its file holds from ``offset``: onnx reads to the end) must be what its dims
    and data type need, and all of them together must fit the memory limit.  Locations
    that are not plain relative paths inside ``base`` are left to onnx's loader, which
    refuses them."""
    total = 0
    for t in tensors:
        if not external_data_helper.uses_external_data(t):
            continue
        what = f"initializer {t.name!r}"
        info = {e.key: e.value for e in t.external_data}
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise ValueError(f"{path}: {what} has external data offset "
                             f"{info.get('offset')!r} and length {info.get('length')!r}, "
                             f"not integers") from None
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"{path}: {what} has a negative external data offset or "
                             f"length ({offset}, {length})")
        need = _tensor_bytes(t, f"{path}: {what}")
        if length is not None and length != need:
            raise ValueError(f"{path}: {what} is damaged: its external data length is "
                             f"{length} bytes, its dims {_dims_text(t)} need {need}")
        if length is None:
            location = info.get("location", "")
            inside = os.path.realpath(base) + os.sep
            file = (os.path.realpath(os.path.join(base, location))
                    if location and not os.path.isabs(location) else "")
            if file.startswith(inside) and os.path.isfile(file):
                held = max(os.path.getsize(file) - offset, 0)
                if held != need:
                    raise ValueError(f"{path}: {what} is damaged: its external data "
                                     f"({location!r} from offset {offset}, no length: "
                                     f"{held} bytes) is not what its dims "
                                     f"{_dims_text(t)} need ({need} bytes)")
            # (and whatever onnx resolves the location to, it reads no more than that)
            t.external_data.add(key="length", value=str(need))
        total += need
    if total:
        check_memory(lambda: f"{path}: the model's external data ({total} bytes)", total)


_ATTRIBUTE_KINDS = {"int": 2, "string": 3, "ints": 7, "strings": 8, "float": 1,
                    "floats": 6}


def _attr(node, name, default=None, kind=None, what=None):
    """The value of attribute ``name`` of ``node`` (``default`` when absent), of the
    ``kind`` given ("int", "string", "ints", "strings", "float", "floats"): any other
    type, or a value grucy cannot read, raises ValueError naming the attribute."""
    from onnx import helper

    for a in node.attribute:
        if a.name != name:
            continue
        where = what or f"{node.op_type} node {node.name or list(node.output)[:1]!r}"
        if kind is not None and a.type != _ATTRIBUTE_KINDS[kind]:
            raise ValueError(f"{where}: attribute {name!r} must be of type {kind}, got "
                             f"attribute type {a.type}")
        try:
            value = helper.get_attribute_value(a)
            if isinstance(value, bytes):
                value = value.decode()
            elif kind == "strings":
                value = [v.decode() if isinstance(v, bytes) else v for v in value]
            elif kind in ("ints", "floats"):
                value = list(value)
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{where}: attribute {name!r} cannot be read "
                             f"({type(exc).__name__}: {exc})") from None
        return value
    return default


def _onnx_node_spec(g, node, k):
    """Configuration and per-direction (W_ih, W_hh, b_ih, b_hh) of GRU node ``k``."""
    what = f"GRU node {k} ({node.name or (node.output[0] if node.output else '')!r})"
    for name in ("clip", "activation_alpha", "activation_beta"):
        if any(a.name == name for a in node.attribute):
            raise ValueError(f"{what} sets {name}="
                             f"{str(_attr(node, name, what=what))[:100]}; grucy computes "
                             f"the plain GRU (no clipping, default activations)")
    direction = _attr(node, "direction", "forward", "string", what)
    if direction == "reverse":
        raise ValueError(f"{what} has direction='reverse'; a single reverse pass has no "
                         f"grucy equivalent (grucy runs the reverse pass only as the second "
                         f"direction of a bidirectional layer).  Reverse each sequence "
                         f"(within its length) and use direction='forward' instead")
    if direction not in ("forward", "bidirectional"):
        raise ValueError(f"{what} has direction={direction!r}; expected 'forward', "
                         f"'reverse' or 'bidirectional'")
    D = 2 if direction == "bidirectional" else 1
    acts = _attr(node, "activations", None, "strings", what)
    if acts is not None:
        if [a.lower() for a in acts] != ["sigmoid", "tanh"] * D:
            raise ValueError(f"{what} has activations={acts}; grucy computes only "
                             f"{['Sigmoid', 'Tanh'] * D}")
    layout = _attr(node, "layout", 0, "int", what)
    if layout not in (0, 1):
        raise ValueError(f"{what} has layout={layout}; expected 0 or 1")
    lbr = _attr(node, "linear_before_reset", 0, "int", what)
    if lbr not in (0, 1):
        raise ValueError(f"{what} has linear_before_reset={lbr}; expected 0 or 1")
    ins = list(node.input) + [""] * (6 - len(node.input))
    arrays = {}
    for pos, name in ((1, "W"), (2, "R"), (3, "B")):
        if ins[pos] == "":
            arrays[name] = None
            continue
        value = g.const(ins[pos])
        if value is None:
            raise ValueError(f"{what}: input {name} ({ins[pos]!r}) is not a constant of the "
                             f"graph (initializer or Constant); grucy needs fixed weights")
        arrays[name] = value
    W, R, Bias = arrays["W"], arrays["R"], arrays["B"]
    if W is None or R is None:
        raise ValueError(f"{what} lacks its W or R input")
    if W.dtype not in (np.float32, np.float64) or R.dtype != W.dtype or (
            Bias is not None and Bias.dtype != W.dtype):
        raise ValueError(f"{what}: inputs W, R and B must be float32 or float64 (all "
                         f"alike), got {W.dtype}, {R.dtype}"
                         + ("" if Bias is None else f", {Bias.dtype}"))
    if R.ndim != 3 or R.shape[0] != D or R.shape[1] != 3 * R.shape[2]:
        raise ValueError(f"{what}: R must be ({D}, 3H, H), got {R.shape}")
    H = R.shape[2]
    hidden = _attr(node, "hidden_size", None, "int", what)
    if hidden is not None and hidden != H:
        raise ValueError(f"{what} has hidden_size={hidden} but R is {R.shape}")
    if W.ndim != 3 or W.shape[:2] != (D, 3 * H):
        raise ValueError(f"{what}: W must be ({D}, {3 * H}, input_size), got {W.shape}")
    if Bias is not None and Bias.shape != (D, 6 * H):
        raise ValueError(f"{what}: B must be ({D}, {6 * H}), got {Bias.shape}")
    if H < 1 or W.shape[2] < 1:
        raise ValueError(f"{what}: W {W.shape} and R {R.shape} hold no weights (a GRU "
                         f"needs hidden_size and input_size >= 1)")
    seq_lens, init_h = ins[4], ins[5]
    for name, value in (("sequence_lens", seq_lens), ("initial_h", init_h)):
        c = g.const(value) if value else None
        if c is not None and not (name == "initial_h" and not np.any(c)):
            raise ValueError(f"{what}: {name} is a constant of the graph ({value!r}); a grucy "
                             f"layer takes it at call time (h0=..., lengths=...), so the "
                             f"graph cannot be converted as it is")
    directions = []
    for d in range(D):
        b = Bias[d] if Bias is not None else np.zeros(6 * H, W.dtype)
        directions.append((_swap_rz(W[d]), _swap_rz(R[d]), _swap_rz(b[:3 * H]),
                           _swap_rz(b[3 * H:])))
    return dict(what=what, D=D, H=H, I=W.shape[2], layout=layout, reset_after=bool(lbr),
                dtype=W.dtype, has_bias=Bias is not None, directions=directions,
                seq_lens=seq_lens, X=ins[0], Y=node.output[0] if node.output else "")


def _check_link(g, prev, spec, probe_tb):
    """Check that ``spec``'s X is ``prev``'s Y with the directions concatenated.

    The ops on the path are replayed in NumPy on a probe array with distinct entries, so
    any path that moves values anywhere else is refused.
    """
    path, name, seen = [], spec["X"], set()
    while name != prev["Y"]:
        # every step goes to another node: a graph with a cycle (a node fed by its own
        # output, directly or around a loop) is refused, never walked forever
        if name in seen or len(path) >= len(g.graph.node):
            raise ValueError(f"{spec['what']}: its input X comes from a cycle of "
                             f"{[n.op_type for n in path][-8:]} nodes (through {name!r}); "
                             f"an ONNX graph has none")
        seen.add(name)
        node = g.producer.get(name)
        if node is None or node.op_type not in _RESHAPING_OPS or node.domain not in (
                "", "ai.onnx"):
            found = "a graph input" if node is None else f"a {node.op_type} node"
            raise ValueError(f"{spec['what']}: its input X comes from {found}, not from the "
                             f"Y of {prev['what']} through {sorted(_RESHAPING_OPS)}; only "
                             f"stacks of GRU nodes convert")
        if not node.input or not node.input[0]:
            raise ValueError(f"{spec['what']}: the {node.op_type} node on its input's path "
                             f"has no input")
        path.append(node)
        name = node.input[0]
    T, B = probe_tb
    D, H = prev["D"], prev["H"]
    if T * B * D * H > _MAX_PROBE:  # declared sizes too large to replay: small ones
        T, B = 2, 3
    shape = (T, D, B, H) if prev["layout"] == 0 else (B, T, D, H)
    y = np.arange(np.prod(shape)).reshape(shape)
    value = y
    for node in reversed(path):
        value = _replay(g, node, value, spec["what"])
    y_tb = y.transpose(0, 2, 1, 3) if prev["layout"] == 0 else y.transpose(1, 0, 2, 3)
    expected = y_tb.reshape(T, B, D * H)  # time-major, directions concatenated
    if spec["layout"] == 1:
        expected = expected.transpose(1, 0, 2)
    if value.shape != expected.shape or not np.array_equal(value, expected):
        raise ValueError(f"{spec['what']}: its input X is not the output of "
                         f"{prev['what']} with the directions concatenated on the last "
                         f"axis (checked by replaying {[n.op_type for n in path]})")


def _replay(g, node, value, what):
    def operand(i):
        c = g.const(node.input[i]) if len(node.input) > i and node.input[i] else None
        if len(node.input) > i and node.input[i] and c is None:
            raise ValueError(f"{what}: {node.op_type} between GRU nodes has a non-constant "
                             f"input {node.input[i]!r}")
        return c

    op = node.op_type
    try:
        if op == "Identity":
            return value
        if op == "Transpose":
            perm = _attr(node, "perm", None, "ints", what)
            return value.transpose(perm) if perm is not None else value.T
        if op == "Reshape":
            target = operand(1)
            if target is None or target.ndim != 1 or target.dtype.kind not in "iu":
                raise ValueError(f"its shape input is {target!r}, not a 1-D integer "
                                 f"constant")
            shape = [int(s) for s in target]
            if not _attr(node, "allowzero", 0, "int", what):
                shape = [value.shape[i] if s == 0 else s for i, s in enumerate(shape)]
            return value.reshape(shape)
        axes = (operand(1) if len(node.input) > 1 and node.input[1]
                else _attr(node, "axes", None, "ints", what))
        if axes is not None:
            axes = np.asarray(axes)
            if axes.ndim > 1 or axes.dtype.kind not in "iu" or axes.size > 64:
                raise ValueError(f"its axes are {axes!r}, not up to 64 integers")
            axes = [int(a) for a in axes.reshape(-1)]
        if op == "Squeeze":
            return np.squeeze(value, axis=None if axes is None else tuple(axes))
        if op == "Unsqueeze":
            if axes is None:
                raise ValueError("it has no axes")
            out = value
            ndim = value.ndim + len(axes)
            for a in sorted(a % ndim for a in axes):
                out = np.expand_dims(out, a)
            return out
    except (ValueError, TypeError, IndexError, OverflowError) as exc:
        raise ValueError(f"{what}: cannot follow {op} between GRU nodes: {exc}") from None
    raise AssertionError(op)  # pragma: no cover


@overload
def from_onnx(model_or_path: Any, *, cls: None = None) -> "grucy.layer.GRU": ...


@overload
def from_onnx(model_or_path: Any, *, cls: Type[_G]) -> _G: ...


def from_onnx(model_or_path: Any, *, cls: Optional[Type[GRUBase]] = None) -> GRUBase:
    """A grucy GRU computing exactly what the GRU nodes of an ONNX model compute.

    Parameters
    ----------
    model_or_path : onnx.ModelProto, str, os.PathLike or bytes
        A path is read with onnx's loader, external data included (only complete
        regular files inside the model's directory: onnx refuses ``..``, absolute paths
        and symbolic links, ValueError); bytes and ModelProto objects must hold their
        weights (they never make grucy read a file).  A model whose GRU nodes form one
        stack: node k+1 reads node k's ``Y`` with the
        directions concatenated (through Transpose / Reshape / Squeeze / Unsqueeze /
        Identity nodes, as exporters write it; verified by replaying them).  Nodes around
        the stack (pre-processing, heads) are not converted.  Each node: constant ``W``,
        ``R`` and optional ``B``; ``linear_before_reset`` 0 or 1 (grucy's reset_after),
        ``layout`` 0 or 1, direction ``forward`` or ``bidirectional``; ``sequence_lens``
        and ``initial_h`` absent or run-time inputs.  Refused, naming the setting:
        ``direction='reverse'`` (a lone reverse pass has no grucy equivalent), ``clip``,
        ``activation_alpha`` / ``activation_beta``, activations other than
        Sigmoid / Tanh, a constant ``sequence_lens`` or non-zero constant ``initial_h``,
        and nodes differing in form, direction, layout, hidden size, dtype or use of
        ``sequence_lens``.
    cls : grucy GRU class, optional
        Default ``grucy.GRU``.

    Returns
    -------
    grucy.GRU
        ``batch_first`` is ``layout == 1``, flipped when the first node's ``X`` is a
        batch/time Transpose (perm [1, 0, 2]) of a graph input, so the layer's ``x`` is
        what the graph is fed.  At run time ``layer(x, h0, lengths)`` gives the nodes'
        numbers when ``lengths`` = ``sequence_lens`` and ``h0`` stacks the nodes'
        ``initial_h`` in node order (transposed to (D, B, H) for ``layout=1``); the
        layer's ``y`` is the last node's ``Y`` with the directions concatenated on the
        last axis, ``h_n`` stacks the nodes' ``Y_h``.
    """
    onnx = _onnx()
    model = _load_onnx(onnx, model_or_path)
    g = _OnnxGraph(model)
    nodes = [n for n in g.graph.node if n.op_type == "GRU" and n.domain in ("", "ai.onnx")]
    if not nodes:
        raise ValueError("the model has no GRU node (only the outer graph is searched)")
    specs = [_onnx_node_spec(g, n, k) for k, n in enumerate(nodes)]
    first = specs[0]
    for spec in specs[1:]:
        for key, label in (("reset_after", "linear_before_reset"), ("D", "direction"),
                           ("layout", "layout"), ("H", "hidden_size"), ("dtype", "dtype")):
            if spec[key] != first[key]:
                raise ValueError(f"{spec['what']} differs from {first['what']} in {label} "
                                 f"({spec[key]} vs {first[key]}); one grucy GRU needs all "
                                 f"layers alike")
        if spec["seq_lens"] != first["seq_lens"]:
            raise ValueError(f"{spec['what']} has sequence_lens {spec['seq_lens']!r} but "
                             f"{first['what']} has {first['seq_lens']!r}; grucy applies one "
                             f"`lengths` to every layer")
    probe = _probe_sizes(g, first)
    for prev, spec in zip(specs, specs[1:]):
        if spec["I"] != prev["D"] * prev["H"]:
            raise ValueError(f"{spec['what']} has input size {spec['I']}, expected "
                             f"{prev['D'] * prev['H']} (the outputs of {prev['what']})")
        _check_link(g, prev, spec, probe)
    batch_first = first["layout"] == 1
    feeder = g.producer.get(first["X"])
    if (feeder is not None and feeder.op_type == "Transpose" and feeder.input
            and feeder.input[0] in g.inputs
            and list(_attr(feeder, "perm", None, "ints") or []) == [1, 0, 2]):
        batch_first = not batch_first
    params = {}
    for k, spec in enumerate(specs):
        for d, arrays in enumerate(spec["directions"]):
            s = _sfx(k, d)
            for name, arr in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), arrays):
                params[f"{name}_{s}"] = arr
    use_bias = any(s["has_bias"] for s in specs)
    if not use_bias:
        params = {k: v for k, v in params.items() if k.startswith("weight")}
    return _build(cls, params, input_size=first["I"], hidden_size=first["H"],
                  num_layers=len(specs), bias=use_bias, batch_first=batch_first,
                  bidirectional=first["D"] == 2, reset_after=first["reset_after"],
                  dtype=np.dtype(first["dtype"]).name)


def _probe_sizes(g, first):
    """(T, B) for replaying the links: the graph's fixed sizes when it has them."""
    T, B = 2, 3
    for vi in g.graph.input:
        if vi.name == first["X"] or (g.producer.get(first["X"]) is not None
                                     and vi.name in g.producer[first["X"]].input):
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                    for d in vi.type.tensor_type.shape.dim]
            if len(dims) == 3:
                t, b = dims[:2] if first["layout"] == 0 else dims[1::-1]
                if g.producer.get(first["X"]) is not None:  # fed through a Transpose
                    t, b = b, t
                T, B = t or T, b or B
    return T, B
