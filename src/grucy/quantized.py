"""int8 inference: ``grucy.quantize(layer, "int8")`` and :class:`QuantizedGRU`.

Dynamic quantization, as PyTorch's ``torch.ao.nn.quantized.dynamic.GRU`` (fbgemm) does
it, with finer scales: the weights are quantized once, symmetric, one scale per output
channel (row of ``weight_ih`` / ``weight_hh``); the inputs and states entering every
product are quantized per row when used (one scale per row, so a sequence's numbers do
not depend on the rest of the batch), multiplied with VPDPBUSD into exact int32 sums and
scaled back to float32.  Biases, gates and states stay float32.  The arithmetic is
defined bit for bit in src/grucy/_lowp.h; CPUs without AVX512_VNNI run an exact
emulation and give the same numbers.

Where it sits (docs/architecture.md): beside the compiled layer it quantizes.  A model is
quantized through its own ``_quantized_copy`` (grucy.models), so this module never
imports the models.
"""

from __future__ import annotations

import copy

import numpy as np

from . import _gru
from ._base import GRUBase, param_names, time_major_x
from ._limits import INT32_MAX, SizeLimitError, check_int32, check_memory
from ._params import ThreadOwner, _names, exclusive
from ._validation import (_flag, _positive_int, as_float_array, check_finite,
                          check_int8_range, check_result, state_array)
from .io import register
from .layer import GRU, ScratchBound

__all__ = ["quantize", "QuantizedGRU", "quantize_weight", "quantized_copy"]

#: What the int8 arithmetic is, recorded in saved files.
SCHEME = "int8: weights symmetric per output channel, activations dynamic per row (u8+128)"


def quantize_weight(w):
    """Symmetric per-row int8 quantization of a float matrix: ``(q int8, scales float32)``
    with ``w[j] ~ q[j] * scales[j]`` (``scales[j] = max(abs(w[j])) / 127``; a zero row
    gets 0)."""
    w = np.asarray(w, np.float32)
    scale = (np.max(np.abs(w), axis=1) / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.where(scale[:, None] > 0, np.rint(w / safe[:, None]), 0)
    return np.clip(q, -127, 127).astype(np.int8), scale


def quantize(obj, dtype="int8"):
    """An inference-only int8 copy of a layer or fitted model with the same API.

    ``quantize(gru, "int8")`` -> :class:`QuantizedGRU` (``forward``/``__call__``,
    ``stream``, ``step``).  ``quantize(model, "int8")`` (a fitted Forecaster,
    GRUClassifier, GRURegressor or CharLM) -> a copy of the model whose GRU runs in
    int8 (``predict``, ``score``, ``bits_per_char``...; fitting it again trains in
    float and drops the quantization).  Both save and load with ``grucy.save`` /
    ``grucy.load``.  The original is left as it is.
    """
    if dtype != "int8":
        raise ValueError(f"dtype must be 'int8' (the only quantized type), got {dtype!r}")
    if isinstance(obj, QuantizedGRU):
        return obj
    if isinstance(obj, GRU):
        return QuantizedGRU.from_layer(obj)
    copier = getattr(type(obj), "_quantized_copy", None)   # a grucy model (GRUModel)
    if copier is not None:
        return copier(obj)
    raise TypeError(f"quantize needs a grucy.GRU or a fitted grucy model, got "
                    f"{type(obj).__name__}")


def quantized_copy(model):
    """A deep copy of a fitted model whose network's GRU runs in int8 (what
    ``GRUModel._quantized_copy`` returns)."""
    model = copy.deepcopy(model)
    _quantize_net(model.net_)
    return model


def _quantize_net(net):
    """Replace a model network's GRU by its int8 copy (the float parameters stay in the
    network's state, so a saved quantized model is rebuilt exactly on loading)."""
    if getattr(net.gru, "precision", None) == "int8":
        return
    float_gru = net.gru
    net.gru = QuantizedGRU.from_layer(float_gru)
    if hasattr(net, "tbptt"):   # CharNet: the state carried across chunks, one stream
        from .nn import TruncatedBPTT
        tbptt = TruncatedBPTT(float_gru, 1)
        tbptt.gru = net.gru
        net.tbptt = tbptt


@register(kind="grucy.QuantizedGRU")
class QuantizedGRU:
    """A :class:`grucy.GRU` for int8 inference (made by :func:`grucy.quantize`).

    ``forward(x, h0=None, lengths=None)`` (also as a call), ``stream(batch_size, h0)``
    and ``step(x, h)`` behave as the float layer's in inference (same shapes, layouts,
    lengths, checks); there is no ``backward``.  Output error against float64 on the
    benchmark shapes: README, "Low precision".  Attributes: the float layer's
    configuration, and ``weights`` (per layer and direction: int8 ``weight_ih``,
    ``weight_hh``, float32 ``scale_ih``, ``scale_hh``, ``bias_ih``, ``bias_hh``).
    """

    dtype = np.dtype(np.float32)
    precision = "int8"
    #: Bytes of kernel scratch a layer keeps between calls (as grucy.GRU's).
    max_scratch_bytes = ScratchBound(GRU.max_scratch_bytes)

    def __init__(self, input_size, hidden_size, num_layers=1, *, bias=True,
                 batch_first=False, bidirectional=False, reset_after=True, weights=None):
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.bias = _flag("bias", bias)
        self.batch_first = _flag("batch_first", batch_first)
        self.bidirectional = _flag("bidirectional", bidirectional)
        self.reset_after = _flag("reset_after", reset_after)
        self.num_directions = 2 if self.bidirectional else 1
        self._lock = ThreadOwner()
        H, D = self.hidden_size, self.num_directions
        if weights is None or len(weights) != self.num_layers * D:
            raise ValueError(f"weights must hold {self.num_layers * D} entries (layers x "
                             f"directions)")
        self._check_size()
        self.weights = []
        for k, w in enumerate(weights):
            in_size = self.input_size if k < D else D * H
            # copies (never views of a float layer's live parameters), made read-only
            for name in ("weight_ih", "weight_hh", "scale_ih", "scale_hh", "bias_ih",
                         "bias_hh"):
                a = np.asarray(w[name])
                if a.dtype.kind not in "iuf" or (name.startswith("weight")
                                                 and a.dtype.kind == "f"):
                    kind = "integers in [-127, 127]" if name.startswith("weight") else \
                        "real numbers"
                    raise TypeError(f"weights[{k}][{name!r}] must hold {kind}, got dtype "
                                    f"{a.dtype}")
                if name.startswith("weight") and a.size and (a.min() < -127
                                                             or a.max() > 127):
                    raise ValueError(f"weights[{k}][{name!r}] must lie in [-127, 127] "
                                     f"(int8, symmetric), got [{a.min()}, {a.max()}]")
            entry = {"weight_ih": np.array(w["weight_ih"], np.int8, order="C", copy=True),
                     "weight_hh": np.array(w["weight_hh"], np.int8, order="C", copy=True)}
            for name in ("scale_ih", "scale_hh", "bias_ih", "bias_hh"):
                entry[name] = np.array(w[name], np.float32, order="C", copy=True)
            if (entry["weight_ih"].shape != (3 * H, in_size)
                    or entry["weight_hh"].shape != (3 * H, H)
                    or any(entry[n].shape != (3 * H,)
                           for n in ("scale_ih", "scale_hh", "bias_ih", "bias_hh"))):
                raise ValueError(f"weights[{k}]: shapes do not match the configuration")
            for name in ("scale_ih", "scale_hh", "bias_ih", "bias_hh"):
                check_finite(f"weights[{k}][{name!r}]", entry[name])
            for name in ("scale_ih", "scale_hh"):
                if np.any(entry[name] < 0):
                    raise ValueError(f"weights[{k}][{name!r}] must be non-negative (the "
                                     f"scales of symmetric quantization)")
                entry[name].flags.writeable = False
            entry["weight_ih"].flags.writeable = False
            entry["weight_hh"].flags.writeable = False
            self.weights.append(entry)

    def _check_size(self):
        """Before the weights are copied: sizes the kernels can index and memory can
        hold (a file declaring a huge layer is refused here, as grucy.GRU's are)."""
        H, D, L, I = self.hidden_size, self.num_directions, self.num_layers, self.input_size
        what = f"QuantizedGRU(input_size={I}, hidden_size={H}, num_layers={L})"
        widest = max(I, D * H if L > 1 else 1, H)
        check_int32(what, {"3*hidden_size*max(input_size, hidden_size, "
                           "num_directions*hidden_size)": 3 * H * widest})
        # The int8 GEMM sums (q + 128) * w, at most 255 * 127 per term, exactly in int32
        # (_lowp.h): K terms fit only up to K = 66311.  The recurrent and upper-layer K
        # (H, D*H) are far below that under the bound above; input_size is not.
        if 255 * 127 * widest > INT32_MAX:
            raise SizeLimitError(f"{what}: the int8 kernels sum 255*127*K in 32-bit "
                                 f"integers, so K = max(input_size, ...) = {widest} must be "
                                 f"at most {INT32_MAX // (255 * 127)} (quantize a layer with "
                                 f"fewer inputs, or keep it in float32 or bf16)")
        weights = D * 3 * H * (I + H) + (L - 1) * D * 3 * H * (D * H + H)
        check_memory(what, weights + L * D * 4 * 3 * H * 4)

    @classmethod
    def from_layer(cls, layer):
        """Quantize a float32 or float64 :class:`grucy.GRU` (its weights as float32)."""
        if not isinstance(layer, GRU):
            raise TypeError(f"layer must be a grucy.GRU, got {type(layer).__name__}")
        layer._check_parameters()
        big = float(np.finfo(np.float32).max)
        for name, p in layer.state_dict().items():
            # (int8 quantizes through float32: a float64 weight beyond its range became
            # inf, then an error about an internal scale_ih the user never passed)
            if p.size and float(np.max(np.abs(p))) > big:
                raise ValueError(f"parameter {name!r} has values beyond float32's range "
                                 f"(up to {float(np.max(np.abs(p))):.3g}; at most "
                                 f"{big:.3g}): int8 quantization goes through "
                                 f"float32; rescale the layer's weights first")
        weights = []
        for k in range(layer.num_layers):
            for d in range(layer.num_directions):
                w_ih, w_hh, b_ih, b_hh = layer.layer_params(k, d)
                q_ih, s_ih = quantize_weight(w_ih)
                q_hh, s_hh = quantize_weight(w_hh)
                weights.append({"weight_ih": q_ih, "weight_hh": q_hh, "scale_ih": s_ih,
                                "scale_hh": s_hh, "bias_ih": np.asarray(b_ih, np.float32),
                                "bias_hh": np.asarray(b_hh, np.float32)})
        return cls(layer.input_size, layer.hidden_size, layer.num_layers, bias=layer.bias,
                   batch_first=layer.batch_first, bidirectional=layer.bidirectional,
                   reset_after=layer.reset_after, weights=weights)

    # -- copies: no lock or scratch buffers shared -----------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_lock", "_scratch", "_step_stream"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = ThreadOwner()

    def __repr__(self):
        opts = [f"{self.input_size}", f"{self.hidden_size}"]
        if self.num_layers != 1:
            opts.append(f"num_layers={self.num_layers}")
        for name, default in (("bias", True), ("batch_first", False),
                              ("bidirectional", False), ("reset_after", True)):
            if getattr(self, name) != default:
                opts.append(f"{name}={getattr(self, name)}")
        return f"QuantizedGRU({', '.join(opts)}, int8)"

    # -- calling ----------------------------------------------------------------------
    def __call__(self, x, h0=None, lengths=None, training=False):
        return self.forward(x, h0=h0, lengths=lengths, training=training)

    def _check_inputs(self, x, h0, lengths):
        """As grucy.GRU's (the same messages, the same limits): time-major float32 x,
        h0 and lengths (None when every sequence is full)."""
        x = time_major_x(x, self.batch_first, self.input_size)
        T, B, I = x.shape
        H, D, L = self.hidden_size, self.num_directions, self.num_layers
        what = f"an int8 forward of x with shape {x.shape} (T, B, I)"
        check_int32(what, {"T*B": T * B, "B*3*hidden_size": B * 3 * H,
                           "B*max(input_size, num_directions*hidden_size)":
                           B * max(I, D * H)})
        N = T * B
        # x's copies (cast, time-major, sorted) and the outputs of two layers, the
        # states, and the one scratch pool of the kernels (the layers share it)
        pool = _gru.workspace_bytes(T, B, max(I, D * H) if L > 1 else I, H,
                                    training=False, reset_after=self.reset_after,
                                    full_lengths=lengths is None, precision="int8")
        check_memory(what, 4 * (3 * N * I + 3 * N * D * H + 4 * L * D * B * H) + pool)
        x = as_float_array("x", x, np.float32)
        check_finite("x", x)
        check_int8_range("x", x, I)
        shape = (L * D, B, H)
        h0 = state_array("h0", h0, shape, np.float32,
                         f"shape (num_layers*num_directions, B, H) = {shape}")
        check_int8_range("h0", h0, H)
        if lengths is not None:
            lengths = GRUBase._check_lengths(lengths, T, B)
            if np.all(lengths == T):
                lengths = None
        return x, h0, lengths

    def _scratch_pool(self):
        """The kernels' reusable buffers (one pool: an inference forward keeps nothing
        between its layers); bounded by ``max_scratch_bytes`` as grucy.GRU's."""
        pool = self.__dict__.get("_scratch")
        if pool is None:
            pool = self._scratch = {}
        return pool

    def _scratch_bytes(self):
        """Bytes the layer's scratch pool holds now."""
        return sum(buf.nbytes for buf in (self.__dict__.get("_scratch") or {}).values())

    def _bound_scratch(self):
        limit = self.max_scratch_bytes
        if limit is not None and self._scratch_bytes() > limit:
            self._scratch = None

    @exclusive
    def free_scratch(self):
        """Free the kernel buffers the layer keeps for its next call."""
        self._scratch = None

    @exclusive
    def forward(self, x, h0=None, lengths=None, training=False):
        """Run the quantized GRU; returns ``(y, h_n)`` as :meth:`grucy.GRU.forward` in
        inference.  ``training=True`` is refused: there is no backward pass in int8."""
        if _flag("training", training):
            raise ValueError("a QuantizedGRU runs inference only (training=False): train "
                             "the float layer, then quantize it again")
        x, h0, lengths = self._check_inputs(x, h0, lengths)
        T, B, _ = x.shape
        H, D = self.hidden_size, self.num_directions
        pool = self._scratch_pool()
        order = None
        if lengths is None:
            batch_sizes = np.full(T, B, np.intc)
        else:   # longest first, as the kernels want (see grucy.GRU.forward)
            order = np.argsort(-lengths, kind="stable")
            x = np.take(x, order, axis=1)
            h0 = h0[:, order]
            batch_sizes = (lengths[order][None, :] > np.arange(T)[:, None]).sum(1)
            batch_sizes = batch_sizes.astype(np.intc)
        layer_in = np.ascontiguousarray(x)
        h_n = np.array(h0, order="C")
        for layer in range(self.num_layers):
            last = layer == self.num_layers - 1
            if order is None:
                y = np.empty((T, B, D * H), np.float32)
            else:
                y = np.zeros((T, B, D * H), np.float32)
            for direction in range(D):
                w = self.weights[layer * D + direction]
                _gru.forward_int8(layer_in, w["weight_ih"], w["weight_hh"], w["scale_ih"],
                                  w["scale_hh"], w["bias_ih"], w["bias_hh"],
                                  h_n[layer * D + direction],
                                  y[:, :, direction * H:(direction + 1) * H], batch_sizes,
                                  direction == 1, self.reset_after, pool,
                                  order if last else None)
            layer_in = y
        y = layer_in
        if order is not None:
            h_n = np.take(h_n, np.argsort(order), axis=1)
        self._bound_scratch()
        # h_n is NaN whenever any output is (NaN propagates through the recurrence)
        check_result("QuantizedGRU.forward: the output", h_n,
                     "the inputs are too large for float32")
        if self.batch_first:
            y = y.transpose(1, 0, 2)
        return np.ascontiguousarray(y), np.ascontiguousarray(h_n)

    def stream(self, batch_size=1, h0=None):
        """A :class:`grucy._gru.GRUStream` in int8: one step per call, state kept (the
        numbers of a one-step :meth:`forward`)."""
        if self.bidirectional:
            raise ValueError("stream() needs a unidirectional GRU: a bidirectional layer "
                             "reads the whole sequence (bidirectional=True)")
        B, H, L = _positive_int("batch_size", batch_size), self.hidden_size, self.num_layers
        check_int32(f"a stream of batch_size={B}", {"batch_size*3*hidden_size": B * 3 * H})
        check_memory(f"a stream of batch_size={B}",
                     4 * (3 * L * B * H + 6 * B * H + 2 * B * self.input_size))
        shape = (L, B, H)
        h0 = state_array("h0", h0, shape, np.float32,
                         f"shape (num_layers, batch_size, hidden_size) = {shape}")
        check_int8_range("h0", h0, H)
        layers = [[w["weight_ih"], w["weight_hh"], w["bias_ih"], w["bias_hh"], w["scale_ih"],
                   w["scale_hh"]] for w in self.weights]
        return _gru.GRUStream(layers, B, H, self.reset_after, np.float32, h0, 2)

    def step(self, x, h=None):
        """One step with the state carried by the caller: ``(y, h_new)``, the numbers of
        a one-step :meth:`forward`."""
        x = as_float_array("x", x, np.float32)
        if x.ndim != 2:
            raise ValueError(f"x must be 2-D (B, input_size), got shape {x.shape}")
        B = x.shape[0]
        if h is not None:
            h = as_float_array("h", h, np.float32)
            shape = (self.num_layers, B, self.hidden_size)
            if h.shape != shape:
                raise ValueError(f"h must have shape (num_layers, batch_size, "
                                 f"hidden_size) = {shape}, got {h.shape}")
            check_finite("h", h)
        # (the stream checks h, as h0 or through its setter, and x against the int8 range)
        cached = self.__dict__.pop("_step_stream", None)
        if cached is not None and cached[0] == B:
            s = cached[1]
            if h is None:
                s.reset()
            else:
                s.h = h
        else:
            s = self.stream(B, h)
        y = s.step(x)
        h_new = s.h
        self._step_stream = (B, s)
        return y, h_new

    # -- export -----------------------------------------------------------------------
    def to_onnx(self, *args, **kwargs):
        """Refused: ONNX Runtime has no quantized GRU, and a QDQ graph around its float
        GRU would quantize differently (per tensor, not per row, and not the states
        inside the loop), so it would not reproduce these numbers.  Export the float
        layer (``grucy.interop.to_onnx(gru)``) and quantize on the other side."""
        raise NotImplementedError(
            "a QuantizedGRU cannot be exported to ONNX: ONNX Runtime has no quantized GRU, "
            "and a QDQ graph would not quantize the states per row inside the recurrence "
            "as grucy does, so it would not reproduce these numbers; export the float "
            "layer instead (grucy.interop.to_onnx) and quantize it there")

    # -- saving (grucy.save / grucy.load) ----------------------------------------------
    def _get_config(self):
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "bias": self.bias,
                "batch_first": self.batch_first, "bidirectional": self.bidirectional,
                "reset_after": self.reset_after, "quantization": SCHEME}

    def _names(self):
        names = param_names(self.num_layers, self.bidirectional, True)
        return [names[4 * k:4 * k + 4] for k in range(self.num_layers * self.num_directions)]

    def _get_arrays(self):
        arrays = {}
        for w, (n_ih, n_hh, b_ih, b_hh) in zip(self.weights, self._names()):
            arrays[n_ih] = w["weight_ih"]
            arrays[n_hh] = w["weight_hh"]
            arrays[f"{n_ih}_scale"] = w["scale_ih"]
            arrays[f"{n_hh}_scale"] = w["scale_hh"]
            arrays[b_ih] = w["bias_ih"]
            arrays[b_hh] = w["bias_hh"]
        return arrays

    @classmethod
    def _from_saved(cls, config, arrays):
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        config = dict(config)
        if config.pop("quantization", None) != SCHEME:
            raise ValueError("the file holds a quantization this grucy does not compute")
        obj = cls.__new__(cls)
        obj.num_layers = _positive_int("num_layers", config.get("num_layers", 1))
        obj.bidirectional = _flag("bidirectional", config.get("bidirectional", False))
        obj.num_directions = 2 if obj.bidirectional else 1
        expected = [name for n_ih, n_hh, b_ih, b_hh in cls._names(obj)
                    for name in (n_ih, n_hh, f"{n_ih}_scale", f"{n_hh}_scale", b_ih, b_hh)]
        missing = [k for k in expected if k not in arrays]
        unexpected = [k for k in arrays if k not in set(expected)]
        if missing or unexpected:
            raise ValueError(f"the arrays are not the weights of a QuantizedGRU with "
                             f"num_layers={obj.num_layers}, bidirectional="
                             f"{obj.bidirectional}: missing {_names(missing)}, unexpected "
                             f"{_names(unexpected)}")
        weights = []
        for n_ih, n_hh, b_ih, b_hh in cls._names(obj):
            for name, dtype in ((n_ih, np.int8), (n_hh, np.int8), (f"{n_ih}_scale", None),
                                (f"{n_hh}_scale", None), (b_ih, None), (b_hh, None)):
                if arrays[name].dtype != (dtype or np.float32):
                    raise TypeError(f"array {name!r} has dtype {arrays[name].dtype}, "
                                    f"expected {np.dtype(dtype or np.float32)}")
            weights.append({"weight_ih": arrays[n_ih], "weight_hh": arrays[n_hh],
                            "scale_ih": arrays[f"{n_ih}_scale"],
                            "scale_hh": arrays[f"{n_hh}_scale"],
                            "bias_ih": arrays[b_ih], "bias_hh": arrays[b_hh]})
        return cls(**config, weights=weights)
