"""The implementations the benchmark times: grucy and its peers, built from the same weights.

Each peer is a class with

* ``NAME`` (the label in the report) and ``MODES`` (which of "train", "infer" it can run);
* ``status()`` -> ``(available, detail)``: a version string, or why it is missing; it
  imports the peer, so nothing here is imported before the benchmark asks for it;
* ``__init__(problem, threads)``: builds the layer from ``problem.state`` (PyTorch names,
  grucy's r, z, n gate order) and the data of ``problem``; raises :class:`Unsupported`
  when the peer cannot express the problem (e.g. ONNX Runtime's GRU has no float64 kernel);
* ``train_step()`` / ``infer()``: the computation that is timed;
* ``train_outputs()`` / ``infer_outputs()``: one fresh run, returned in grucy's layout
  (``y`` (T, B, D*H), ``h_n`` (L*D, B, H), ``dx`` (T, B, I), ``grad:<param name>``) so the
  benchmark can check every peer against grucy before timing it.

A training step is forward plus backward of ``sum(y * dy)`` (h_n gets no gradient), with
the input gradient computed by every peer, as grucy's ``backward`` always does.  Gradients
accumulate across timed repeats (as in training without ``zero_grad``); the ``*_outputs``
methods zero them first.

The low-precision implementations (``LOWP``: grucy in bf16 and int8, PyTorch's dynamic
int8 GRU) have the same interface plus ``PRECISION`` and their own ``CHECK_TOL``: they are
checked against grucy's float32 results with a tolerance that their rounding allows, and
reported in their own table (``--precisions``).

The streaming peers (one input step per call at B=1) are in ``_bench_stream.py``.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

__all__ = ["DEFAULT_SHAPES", "Problem", "Unsupported", "PEERS", "SUBJECT", "LOWP",
           "gru_onnx_model", "ort_session", "rzn_to_zrn"]


DEFAULT_SHAPES = [  # (B, T, I, H): the five core shapes of the benchmark
    (1, 100, 32, 64),
    (16, 100, 64, 128),
    (32, 100, 128, 256),
    (64, 50, 256, 512),
    (32, 50, 512, 1024),
]


class Unsupported(Exception):
    """The peer cannot run this problem (reported, not timed)."""


class Problem:
    """Weights and data of one benchmark computation, shared by every implementation.

    x (T, B, I) time-major, dy (T, B, D*H), lengths (B,) int64 or None, state: the
    parameters under PyTorch's names (from ``grucy.reference.GRU(..., seed=seed)``).
    """

    def __init__(self, B, T, I, H, *, layers=1, bidirectional=False, dtype=np.float32,
                 lengths=None, seed=0, state=None, x=None, dy=None):
        from grucy.reference import GRU as ReferenceGRU

        self.B, self.T, self.I, self.H = int(B), int(T), int(I), int(H)
        self.layers = int(layers)
        self.bidirectional = bool(bidirectional)
        self.D = 2 if bidirectional else 1
        self.dtype = np.dtype(dtype)
        self.lengths = None if lengths is None else np.asarray(lengths, np.int64)
        rng = np.random.default_rng(seed)
        if state is None:
            state = ReferenceGRU(self.I, self.H, self.layers,
                                 bidirectional=self.bidirectional, dtype=self.dtype,
                                 seed=seed).state_dict()
        self.state = state
        self.x = (rng.standard_normal((self.T, self.B, self.I)).astype(self.dtype)
                  if x is None else x)
        self.dy = (rng.standard_normal((self.T, self.B, self.D * self.H)).astype(self.dtype)
                   if dy is None else dy)

    def with_lengths(self, lengths):
        """The same weights and data with other sequence lengths (None: full length)."""
        return Problem(self.B, self.T, self.I, self.H, layers=self.layers,
                       bidirectional=self.bidirectional, dtype=self.dtype,
                       lengths=lengths, state=self.state, x=self.x, dy=self.dy)

    @property
    def shape(self):
        return (self.B, self.T, self.I, self.H)

    def rows(self):
        """Valid (step, sequence) pairs: T*B, or sum(lengths)."""
        return self.T * self.B if self.lengths is None else int(self.lengths.sum())

    def flops(self, mode):
        """18 * rows * H * (I_k + H) per layer and direction for training, a third for inference."""
        total = 0.0
        for k in range(self.layers):
            in_k = self.I if k == 0 else self.D * self.H
            total += self.D * 18.0 * self.rows() * self.H * (in_k + self.H)
        return total if mode == "train" else total / 3.0


def rzn_to_zrn(w, H):
    """Swap the first two H-blocks (gate order r, z, n <-> z, r, n) of a (3H, ...) array."""
    return np.concatenate([w[H:2 * H], w[:H], w[2 * H:]], axis=0)


def _version(module_name):
    try:
        from importlib.metadata import version
        return version(module_name)
    except Exception:  # metadata missing (vendored or source tree)
        return "?"


def _missing(module):
    return importlib.util.find_spec(module) is None


# -- grucy and the NumPy baseline -------------------------------------------------------
class GrucyPeer:
    """grucy.GRU (the subject of the benchmark)."""

    NAME = "grucy"
    MODES = ("train", "infer")

    @staticmethod
    def layer_class():
        from grucy import GRU
        return GRU

    @classmethod
    def status(cls):
        try:
            cls.layer_class()
        except ImportError as exc:  # the compiled extension is not built
            return False, f"cannot import: {exc}"
        from grucy import __version__
        return True, __version__

    def __init__(self, problem, threads):
        p = problem
        self.p = p
        self.layer = self.layer_class()(p.I, p.H, p.layers, bidirectional=p.bidirectional,
                                        dtype=p.dtype, seed=0)
        self.layer.load_state_dict(p.state)

    def train_step(self):
        self.layer.forward(self.p.x, lengths=self.p.lengths, training=True)
        self.layer.backward(self.p.dy)

    def infer(self):
        self.layer.forward(self.p.x, lengths=self.p.lengths, training=False)

    def train_outputs(self):
        self.layer.zero_grad()
        y, h_n = self.layer.forward(self.p.x, lengths=self.p.lengths, training=True)
        dx, _ = self.layer.backward(self.p.dy)
        out = {"y": y, "h_n": h_n, "dx": dx}
        out.update({f"grad:{k}": g.copy() for k, g in self.layer.grads.items()})
        self.layer.zero_grad()
        return out

    def infer_outputs(self):
        y, h_n = self.layer.forward(self.p.x, lengths=self.p.lengths, training=False)
        return {"y": y, "h_n": h_n}

    def reset(self):
        self.layer.zero_grad()


class NumpyPeer(GrucyPeer):
    """grucy.reference.GRU: plain NumPy, the baseline."""

    NAME = "numpy"

    @staticmethod
    def layer_class():
        from grucy.reference import GRU
        return GRU

    @classmethod
    def status(cls):
        return True, f"grucy.reference on numpy {np.__version__}"


# -- PyTorch ----------------------------------------------------------------------------
class TorchPeer:
    """torch.nn.GRU; variable lengths through pack_padded_sequence (enforce_sorted=False)."""

    NAME = "torch"
    MODES = ("train", "infer")

    @classmethod
    def status(cls):
        if _missing("torch"):
            return False, "missing (torch is not installed)"
        import torch
        return True, torch.__version__

    def __init__(self, problem, threads):
        import torch

        p = self.p = problem
        torch.set_num_threads(threads)
        self.torch = torch
        tdtype = {np.dtype(np.float32): torch.float32,
                  np.dtype(np.float64): torch.float64}[p.dtype]
        self.gru = torch.nn.GRU(p.I, p.H, p.layers, bidirectional=p.bidirectional,
                                dtype=tdtype)
        with torch.no_grad():
            for name, param in self.gru.named_parameters():
                param.copy_(torch.from_numpy(np.ascontiguousarray(p.state[name])))
        self.x = torch.from_numpy(p.x)
        self.x_grad = torch.from_numpy(p.x.copy()).requires_grad_(True)
        self.dy = torch.from_numpy(p.dy)
        self.lengths = None if p.lengths is None else torch.from_numpy(p.lengths)

    def _forward(self, x):
        if self.lengths is None:
            return self.gru(x)
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
        packed = pack_padded_sequence(x, self.lengths, enforce_sorted=False)
        y_packed, h_n = self.gru(packed)
        y, _ = pad_packed_sequence(y_packed, total_length=self.p.T)
        return y, h_n

    def train_step(self):
        y, _ = self._forward(self.x_grad)
        y.backward(self.dy)

    def infer(self):
        with self.torch.inference_mode():
            self._forward(self.x)

    def reset(self):
        self.gru.zero_grad(set_to_none=True)
        self.x_grad.grad = None

    def allocate_grads(self):
        """Parameter gradient buffers as they exist after the first step of a training
        loop (grucy's exist from construction); the input gradient stays unallocated,
        as grucy allocates dx in every step."""
        for param in self.gru.parameters():
            param.grad = self.torch.zeros_like(param)

    def train_outputs(self):
        self.reset()
        y, h_n = self._forward(self.x_grad)
        y.backward(self.dy)
        out = {"y": y.detach().numpy().copy(), "h_n": h_n.detach().numpy().copy(),
               "dx": self.x_grad.grad.numpy().copy()}
        out.update({f"grad:{k}": v.grad.numpy().copy()
                    for k, v in self.gru.named_parameters()})
        self.reset()
        return out

    def infer_outputs(self):
        with self.torch.inference_mode():
            y, h_n = self._forward(self.x)
        return {"y": y.numpy().copy(), "h_n": h_n.numpy().copy()}


# -- ONNX Runtime -----------------------------------------------------------------------
def gru_onnx_model(state, I, H, layers, bidirectional, dtype, *, lengths=False,
                   initial_h=False, opset=14):
    """An ONNX graph of a (stacked) GRU built with onnx.helper from PyTorch-named weights.

    One ``GRU`` node per layer (gate order z, r, h; ``linear_before_reset=1``, the
    reset-after form), layout 0 (time-major).  Between layers, Y (T, D, B, H) is turned
    into (T, B, D*H) by Transpose + Reshape.  Inputs: ``X`` (T, B, I), ``sequence_lens``
    (B,) int32 when ``lengths``, ``initial_h`` (L*D, B, H) when ``initial_h`` (split per
    layer).  Outputs: ``Y`` of the last layer (T, D, B, H) and ``Y_h_l{k}`` (D, B, H) per
    layer.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = {np.dtype(np.float32): TensorProto.FLOAT,
            np.dtype(np.float64): TensorProto.DOUBLE}[np.dtype(dtype)]
    D = 2 if bidirectional else 1
    suffixes = ("", "_reverse") if bidirectional else ("",)
    inputs = [helper.make_tensor_value_info("X", elem, ["T", "B", I])]
    if lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]))
    if initial_h:
        inputs.append(helper.make_tensor_value_info("initial_h", elem, [layers * D, "B", H]))
    nodes, inits, outputs = [], [], []
    if initial_h and layers > 1:
        nodes.append(helper.make_node("Split", ["initial_h", "h0_split"],
                                      [f"h0_l{k}" for k in range(layers)], axis=0))
        inits.append(numpy_helper.from_array(np.full(layers, D, np.int64), "h0_split"))
    layer_in = "X"
    for k in range(layers):
        W = np.stack([rzn_to_zrn(state[f"weight_ih_l{k}{s}"], H) for s in suffixes])
        R = np.stack([rzn_to_zrn(state[f"weight_hh_l{k}{s}"], H) for s in suffixes])
        Bias = np.stack([np.concatenate([rzn_to_zrn(state[f"bias_ih_l{k}{s}"], H),
                                         rzn_to_zrn(state[f"bias_hh_l{k}{s}"], H)])
                         for s in suffixes])
        for name, arr in (("W", W), ("R", R), ("B", Bias)):
            inits.append(numpy_helper.from_array(arr.astype(dtype), f"{name}_l{k}"))
        h0 = "" if not initial_h else ("initial_h" if layers == 1 else f"h0_l{k}")
        node_in = [layer_in, f"W_l{k}", f"R_l{k}", f"B_l{k}",
                   "sequence_lens" if lengths else "", h0]
        while node_in[-1] == "":
            node_in.pop()
        y_name = "Y" if k == layers - 1 else f"Y_l{k}"
        nodes.append(helper.make_node(
            "GRU", node_in, [y_name, f"Y_h_l{k}"], hidden_size=H,
            direction="bidirectional" if bidirectional else "forward",
            linear_before_reset=1))
        outputs.append(helper.make_tensor_value_info(f"Y_h_l{k}", elem, [D, "B", H]))
        if k < layers - 1:
            nodes.append(helper.make_node("Transpose", [y_name], [f"Yt_l{k}"],
                                          perm=[0, 2, 1, 3]))
            nodes.append(helper.make_node("Reshape", [f"Yt_l{k}", "tbf_shape"],
                                          [f"X_l{k + 1}"]))
            layer_in = f"X_l{k + 1}"
    if layers > 1:
        inits.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), "tbf_shape"))
    outputs.insert(0, helper.make_tensor_value_info("Y", elem, ["T", D, "B", H]))
    graph = helper.make_graph(nodes, "grucy_gru", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="bench/bench_gru.py")
    onnx.checker.check_model(model)
    return model


def ort_session(model, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 4  # fatal only: refusals (float64) are reported by the benchmark
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


class OnnxRuntimePeer:
    """ONNX Runtime's GRU operator (CPU execution provider), inference only."""

    NAME = "onnxruntime"
    MODES = ("infer",)

    @classmethod
    def status(cls):
        for mod in ("onnx", "onnxruntime"):
            if _missing(mod):
                return False, f"missing ({mod} is not installed)"
        import onnxruntime
        return True, onnxruntime.__version__

    def __init__(self, problem, threads):
        p = self.p = problem
        model = gru_onnx_model(p.state, p.I, p.H, p.layers, p.bidirectional, p.dtype,
                               lengths=p.lengths is not None)
        self.sess = ort_session(model, threads)
        self.feeds = {"X": p.x}
        if p.lengths is not None:
            self.feeds["sequence_lens"] = p.lengths.astype(np.int32)
        try:
            self.sess.run(None, self.feeds)
        except Exception as exc:  # e.g. "GRU operator does not support double yet"
            msg = str(exc).split("Status Message:")[-1].strip()
            raise Unsupported(f"onnxruntime refuses {p.dtype}: {msg}") from None

    def infer(self):
        self.sess.run(None, self.feeds)

    def infer_outputs(self):
        p = self.p
        out = self.sess.run(None, self.feeds)
        y = out[0].transpose(0, 2, 1, 3).reshape(p.T, p.B, p.D * p.H)
        return {"y": y, "h_n": np.concatenate(out[1:], axis=0)}

    def reset(self):
        pass


# -- Keras --------------------------------------------------------------------------------
class _KerasPeer:
    """keras.layers.GRU(reset_after=True) on one Keras backend; 1 layer, 1 direction.

    Keras reads its backend once per process (``KERAS_BACKEND``), so only one of the Keras
    peers can run in a benchmark process.  Data are batch-major for Keras; the transposed
    copies are made outside the timed calls.
    """

    BACKEND = None
    REQUIRES = ()
    MODES = ("train", "infer")

    @classmethod
    def status(cls):
        for mod in ("keras",) + cls.REQUIRES:
            if _missing(mod):
                return False, f"missing ({mod} is not installed)"
        import sys
        if "keras" in sys.modules:
            backend = sys.modules["keras"].backend.backend()
        else:
            backend = os.environ.get("KERAS_BACKEND", cls.BACKEND)
        if backend != cls.BACKEND:
            return False, (f"not run: this process's Keras backend is {backend!r} "
                           f"(KERAS_BACKEND); run a separate benchmark for {cls.BACKEND}")
        os.environ["KERAS_BACKEND"] = cls.BACKEND
        import keras
        return True, f"keras {keras.__version__}, backend {cls.BACKEND} {_version(cls.REQUIRES[0])}"

    def __init__(self, problem, threads):
        p = self.p = problem
        if p.layers != 1 or p.bidirectional or p.lengths is not None:
            raise Unsupported("the benchmark's Keras adapter covers 1 layer, 1 direction, "
                              "full lengths only")
        self._set_threads(threads)
        import keras

        H = p.H
        self.layer = keras.layers.GRU(H, return_sequences=True, return_state=True,
                                      reset_after=True, dtype=str(p.dtype))
        self.layer.build((p.B, p.T, p.I))
        st = p.state
        self.layer.set_weights([
            rzn_to_zrn(st["weight_ih_l0"], H).T, rzn_to_zrn(st["weight_hh_l0"], H).T,
            np.stack([rzn_to_zrn(st["bias_ih_l0"], H), rzn_to_zrn(st["bias_hh_l0"], H)])])
        self.x_bm = np.ascontiguousarray(p.x.transpose(1, 0, 2))
        self.dy_bm = np.ascontiguousarray(p.dy.transpose(1, 0, 2))
        self._setup()

    def _grads_to_torch_names(self, kernel, recurrent, bias):
        H = self.p.H
        return {"grad:weight_ih_l0": rzn_to_zrn(np.asarray(kernel).T, H),
                "grad:weight_hh_l0": rzn_to_zrn(np.asarray(recurrent).T, H),
                "grad:bias_ih_l0": rzn_to_zrn(np.asarray(bias)[0], H),
                "grad:bias_hh_l0": rzn_to_zrn(np.asarray(bias)[1], H)}

    def _outputs(self, y_bm, h):
        return {"y": np.asarray(y_bm).transpose(1, 0, 2), "h_n": np.asarray(h)[None]}


class KerasTorchPeer(_KerasPeer):
    NAME = "keras-torch"
    BACKEND = "torch"
    REQUIRES = ("torch",)

    def _set_threads(self, threads):
        import torch
        torch.set_num_threads(threads)

    def _setup(self):
        import torch
        self.torch = torch
        self.x = torch.from_numpy(self.x_bm)
        self.x_grad = torch.from_numpy(self.x_bm.copy()).requires_grad_(True)
        self.dy = torch.from_numpy(self.dy_bm)

    def train_step(self):
        y, _ = self.layer(self.x_grad, training=True)
        y.backward(self.dy)

    def infer(self):
        with self.torch.no_grad():
            self.layer(self.x, training=False)

    def reset(self):
        for w in self.layer.trainable_weights:
            w.value.grad = None
        self.x_grad.grad = None

    def train_outputs(self):
        self.reset()
        y, h = self.layer(self.x_grad, training=True)
        y.backward(self.dy)
        kernel, recurrent, bias = (w.value.grad.numpy().copy()
                                   for w in self.layer.trainable_weights)
        out = self._outputs(y.detach().numpy(), h.detach().numpy())
        out["dx"] = self.x_grad.grad.numpy().transpose(1, 0, 2).copy()
        out.update(self._grads_to_torch_names(kernel, recurrent, bias))
        self.reset()
        return out

    def infer_outputs(self):
        with self.torch.no_grad():
            y, h = self.layer(self.x, training=False)
        return self._outputs(y.numpy(), h.numpy())


class KerasTensorFlowPeer(_KerasPeer):
    """Keras on TensorFlow.  Not exercised on the development machine (no tensorflow)."""

    NAME = "keras-tf"
    BACKEND = "tensorflow"
    REQUIRES = ("tensorflow",)

    def _set_threads(self, threads):
        import tensorflow as tf
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised: keep what it has
            pass

    def _setup(self):
        import tensorflow as tf
        self.tf = tf
        self.x = tf.constant(self.x_bm)
        self.dy = tf.constant(self.dy_bm)

    def _grads(self):
        tf = self.tf
        with tf.GradientTape() as tape:
            tape.watch(self.x)
            y, h = self.layer(self.x, training=True)
            loss = tf.reduce_sum(y * self.dy)
        grads = tape.gradient(loss, [self.x] + list(self.layer.trainable_variables))
        return y, h, grads

    def train_step(self):
        self._grads()

    def infer(self):
        self.layer(self.x, training=False)

    def reset(self):
        pass

    def train_outputs(self):
        y, h, grads = self._grads()
        out = self._outputs(y.numpy(), h.numpy())
        out["dx"] = grads[0].numpy().transpose(1, 0, 2)
        out.update(self._grads_to_torch_names(*(g.numpy() for g in grads[1:])))
        return out

    def infer_outputs(self):
        y, h = self.layer(self.x, training=False)
        return self._outputs(y.numpy(), h.numpy())


class GrucyIsaPeer(GrucyPeer):
    """grucy.GRU on another of its GEMM kernels (GRUCY_ISA): what a CPU without AVX-512
    runs (avx2), a CPU with neither (portable C), or scipy's BLAS; switched around
    every call, so the same process compares them on the same weights."""

    ISA = None

    @classmethod
    def status(cls):
        ok, detail = GrucyPeer.status()
        if not ok:
            return ok, detail
        from grucy import _gru
        if cls.ISA not in _gru.available_isas():
            return False, f"this CPU cannot run the {cls.ISA} kernels"
        return True, f"grucy {detail}, GRUCY_ISA={cls.ISA}"

    def _on_isa(self, fn):
        from grucy import _gru
        old = _gru._set_isa(self.ISA)
        try:
            return fn()
        finally:
            _gru._set_isa(old)

    def train_step(self):
        self._on_isa(super().train_step)

    def infer(self):
        self._on_isa(super().infer)

    def train_outputs(self):
        return self._on_isa(super().train_outputs)

    def infer_outputs(self):
        return self._on_isa(super().infer_outputs)


ISAS = ("avx2", "portable", "blas")
ISA_PEERS = {f"grucy-{isa}": type(f"Grucy{isa.capitalize()}Peer", (GrucyIsaPeer,),
                                  {"NAME": f"grucy-{isa}", "ISA": isa}) for isa in ISAS}


# -- low precision (issue 18) ------------------------------------------------------------
def _float32_only(p, what):
    if p.dtype != np.float32:
        raise Unsupported(f"{what} computes float32 layers only")


class _GrucyLowpPeer(GrucyPeer):
    """grucy in a low precision (PRECISION): its status names the kernel that runs."""

    @classmethod
    def status(cls):
        ok, detail = GrucyPeer.status()
        if ok:
            from grucy import _gru
            detail = f"{detail}, kernel {_gru.lowp_kernels()[cls.PRECISION]}"
        return ok, detail


class GrucyBf16Peer(_GrucyLowpPeer):
    """grucy.GRU(precision="bf16"): bf16 products, float32 sums (training and inference)."""

    NAME = "grucy-bf16"
    PRECISION = "bf16"
    # bf16 keeps 8 significant bits: outputs and gradients within ~1e-2 of float32's
    CHECK_TOL = 5e-2

    def __init__(self, problem, threads):
        _float32_only(problem, "grucy's bf16 mode")
        super().__init__(problem, threads)
        self.layer.precision = "bf16"


class GrucyInt8Peer(_GrucyLowpPeer):
    """grucy.quantize(gru, "int8"): int8 inference."""

    NAME = "grucy-int8"
    MODES = ("infer",)
    PRECISION = "int8"
    CHECK_TOL = 0.15     # 8-bit operands: a few 1e-2 of the output's range

    def __init__(self, problem, threads):
        _float32_only(problem, "grucy.quantize")
        super().__init__(problem, threads)
        import grucy
        self.layer = grucy.quantize(self.layer, "int8")

    def infer(self):
        self.layer.forward(self.p.x, lengths=self.p.lengths)

    def infer_outputs(self):
        y, h_n = self.layer.forward(self.p.x, lengths=self.p.lengths)
        return {"y": y, "h_n": h_n}

    def reset(self):
        pass


class TorchInt8Peer(TorchPeer):
    """torch.ao.nn.quantized.dynamic.GRU (fbgemm) made from the same torch.nn.GRU:
    int8 weights (per tensor), activations quantized dynamically, inference only."""

    NAME = "torch-int8"
    MODES = ("infer",)
    PRECISION = "int8"
    CHECK_TOL = 0.15

    @classmethod
    def status(cls):
        ok, detail = TorchPeer.status()
        if ok:
            import torch
            detail = (f"{detail}, torch.ao.nn.quantized.dynamic.GRU, engine "
                      f"{torch.backends.quantized.engine}")
        return ok, detail

    def __init__(self, problem, threads):
        _float32_only(problem, "torch's dynamic int8 GRU")
        super().__init__(problem, threads)
        import warnings
        torch = self.torch
        with warnings.catch_warnings():   # (torch.ao.quantization: deprecated, still there)
            warnings.simplefilter("ignore")
            self.gru.qconfig = torch.ao.quantization.default_dynamic_qconfig
            self.gru = torch.ao.nn.quantized.dynamic.GRU.from_float(self.gru)


SUBJECT = GrucyPeer
PEERS = {cls.NAME: cls for cls in (TorchPeer, OnnxRuntimePeer, NumpyPeer,
                                   KerasTensorFlowPeer, KerasTorchPeer)}
PEERS.update(ISA_PEERS)
#: the low-precision implementations, by the precision that brings them in
LOWP = {"grucy-bf16": GrucyBf16Peer, "grucy-int8": GrucyInt8Peer,
        "torch-int8": TorchInt8Peer}
