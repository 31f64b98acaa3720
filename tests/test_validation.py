"""Every public entry point validates its input, casts by one documented policy, handles
every memory layout identically, never modifies its inputs and follows the NaN policy.

The policies (README "Guarantees"):

* cast: integers and floats of any width are cast to the layer's dtype; bool, complex,
  object, string and datetime arrays are refused with TypeError naming the argument;
* layouts: C, Fortran, strided, negative-stride, broadcast and read-only arrays give
  bit-identical results;
* NaN/inf: refused with ValueError wherever data enters (x, h0, dy, dh_n, state dicts,
  Linear, mse_loss) and in Adam's gradients (the step then changes nothing); a forward
  whose result would be non-finite (parameters made NaN in place, overflow) raises
  instead of returning it;
* sizes: too large to allocate or to index with the kernels' 32-bit BLAS sizes ->
  SizeLimitError (a ValueError and a MemoryError) before anything is allocated.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
import re
import tracemalloc

import numpy as np
import pytest

import grucy
from grucy import SizeLimitError
from grucy import reference
from grucy._limits import _parse_bytes, memory_limit
from grucy.nn import Linear, mse_loss
from grucy.optim import Adam, clip_grad_norm

from conftest import make_inputs, run_layer, assert_results_equal

LAYERS = [grucy.GRU, reference.GRU]
LAYER_IDS = ["compiled", "reference"]


def fingerprint(value):
    """Everything observable about an input: bytes, dtype, shape, strides, writeability."""
    if isinstance(value, dict):
        return {k: fingerprint(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [fingerprint(v) for v in value]
    if value is None:
        return None
    arr = np.asarray(value)
    digest = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
    return (digest, arr.dtype.str, arr.shape, arr.strides, arr.flags.writeable)


def small(cls, dtype=np.float64, **kw):
    kw.setdefault("seed", 0)
    return cls(3, 4, num_layers=2, bidirectional=True, dtype=dtype, **kw)


# -- cast policy ---------------------------------------------------------------------------
REFUSED_DTYPES = [bool, np.complex64, object, "U3", "S3", "datetime64[s]"]


@pytest.mark.parametrize("cls", LAYERS, ids=LAYER_IDS)
@pytest.mark.parametrize("bad", REFUSED_DTYPES, ids=str)
def test_refused_dtypes_name_the_argument(cls, bad, rng):
    layer = small(cls)
    inputs = make_inputs(rng, layer, T=3, B=2)
    for arg in ("x", "h0"):
        kwargs = dict(x=inputs["x"], h0=inputs["h0"])
        kwargs[arg] = np.zeros(kwargs[arg].shape, dtype=bad)
        with pytest.raises(TypeError, match=rf"^{arg} must be an array of real numbers.*"
                                            rf"got dtype"):
            layer.forward(**kwargs)
    layer.forward(inputs["x"], inputs["h0"])
    for arg in ("dy", "dh_n"):
        kwargs = dict(dy=inputs["dy"], dh_n=inputs["dh_n"])
        kwargs[arg] = np.zeros(kwargs[arg].shape, dtype=bad)
        with pytest.raises(TypeError, match=rf"^{arg} must be an array of real numbers"):
            layer.backward(**kwargs)
    sd = layer.state_dict()
    sd["weight_hh_l0"] = np.zeros(sd["weight_hh_l0"].shape, dtype=bad)
    with pytest.raises(TypeError, match=r"state_dict\['weight_hh_l0'\]"):
        layer.load_state_dict(sd)


@pytest.mark.parametrize("bad", REFUSED_DTYPES, ids=str)
def test_linear_and_loss_refuse_the_same_dtypes(bad):
    lin = Linear(3, 2, dtype=np.float64, seed=0)
    with pytest.raises(TypeError, match="^x must be an array of real numbers"):
        lin.forward(np.zeros((4, 3), dtype=bad))
    lin.forward(np.zeros((4, 3)))
    with pytest.raises(TypeError, match="^dy must be an array of real numbers"):
        lin.backward(np.zeros((4, 2), dtype=bad))
    with pytest.raises(TypeError, match="^pred must"):
        mse_loss(np.zeros(3, dtype=bad), np.zeros(3))
    with pytest.raises(TypeError, match="^target must"):
        mse_loss(np.zeros(3), np.zeros(3, dtype=bad))


@pytest.mark.parametrize("cls", LAYERS, ids=LAYER_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("given", [np.int8, np.int64, np.uint16, np.float16, np.float32,
                                   np.float64, np.longdouble], ids=str)
def test_real_dtypes_are_cast_like_an_explicit_astype(cls, dtype, given, rng):
    layer = small(cls, dtype)
    inputs = make_inputs(rng, layer, T=3, B=2)
    ints = {k: np.round(v * 3) for k, v in inputs.items() if isinstance(v, np.ndarray)}
    as_given = {k: v.astype(given) for k, v in ints.items()}
    as_layer = {k: v.astype(given).astype(dtype) for k, v in ints.items()}
    got = run_layer(layer, dict(as_given, lengths=None))
    expected = run_layer(layer, dict(as_layer, lengths=None))
    assert_results_equal(got, expected)
    assert got["y"].dtype == dtype and got["dx"].dtype == dtype


def test_ragged_and_odd_inputs_name_the_argument(rng):
    layer = small(grucy.GRU)
    with pytest.raises(ValueError, match="^x must be a rectangular array"):
        layer.forward([[[1.0, 2.0, 3.0]], [[1.0, 2.0]]])
    x = make_inputs(rng, layer, T=3, B=2)["x"]
    with pytest.raises(ValueError, match="^lengths must be a sequence"):
        layer.forward(x, lengths=[[1], [1, 2]])
    with pytest.raises(TypeError, match="^lengths must be integers"):
        layer.forward(x, lengths=np.array([True, True]))
    with pytest.raises(TypeError, match="^lengths must be integers"):
        layer.forward(x, lengths=[np.nan, 1.0])
    with pytest.raises(ValueError, match=r"^lengths must have shape \(B,\) = \(2,\)"):
        layer.forward(x, lengths=np.int64(3))


@pytest.mark.parametrize("name", ["bias", "batch_first", "bidirectional", "reset_after"])
@pytest.mark.parametrize("value", ["no", None, 2, 0.5, [True]], ids=repr)
def test_flags_must_be_booleans(name, value):
    with pytest.raises(TypeError, match=rf"^{name} must be True or False"):
        grucy.GRU(3, 4, **{name: value})


def test_flags_accept_numpy_bools_and_0_1():
    g = grucy.GRU(3, 4, bias=np.False_, bidirectional=1, batch_first=0)
    assert (g.bias, g.bidirectional, g.batch_first) == (False, True, False)


@pytest.mark.parametrize("cls", LAYERS, ids=LAYER_IDS)
def test_training_flag_and_seed_are_validated(cls, rng):
    layer = small(cls)
    x = make_inputs(rng, layer, T=3, B=2)["x"]
    with pytest.raises(TypeError, match="^training must be True or False"):
        layer.forward(x, training="yes")
    with pytest.raises(TypeError, match="^seed must be"):
        cls(3, 4, seed="abc")
    with pytest.raises(TypeError, match="^seed must be"):
        cls(3, 4, seed=-1)
    with pytest.raises(TypeError, match="^training must be True or False"):
        Linear(3, 2).forward(np.zeros((1, 3)), training=None)


# -- layouts: bitwise identical, inputs never modified -------------------------------------
def layouts(a):
    """The same values as C, Fortran, strided, negative-stride and read-only arrays."""
    out = {"C": np.ascontiguousarray(a), "fortran": np.asfortranarray(a)}
    every_other = (slice(None, None, 2),) * a.ndim
    big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
    big[every_other] = a
    out["strided"] = big[every_other]
    out["negative"] = np.flip(np.ascontiguousarray(np.flip(a)))
    assert all(s < 0 for s in out["negative"].strides if s)
    ro = a.copy()
    ro.flags.writeable = False
    out["read-only"] = ro
    if a.ndim > 1:
        out["swapped view"] = np.swapaxes(np.ascontiguousarray(np.swapaxes(a, 0, 1)), 0, 1)
    for name, v in out.items():
        np.testing.assert_array_equal(v, a, err_msg=name)
    return out


@pytest.mark.parametrize("cls", LAYERS, ids=LAYER_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_every_layout_gives_bitwise_identical_results(cls, dtype, batch_first, rng):
    layer = small(cls, dtype, batch_first=batch_first, dropout=0.3, seed=0)
    inputs = make_inputs(rng, layer, T=5, B=3, lengths=True)
    twin = small(cls, dtype, batch_first=batch_first, dropout=0.3, seed=0)
    expected = run_layer(twin, inputs)
    variants = {k: layouts(v) for k, v in inputs.items() if isinstance(v, np.ndarray)}
    for layout in variants["x"]:
        twin = small(cls, dtype, batch_first=batch_first, dropout=0.3, seed=0)
        given = {k: v.get(layout, v["C"]) for k, v in variants.items()}
        before = fingerprint(given)
        got = run_layer(twin, given)
        try:
            assert_results_equal(got, expected)
        except AssertionError as exc:
            raise AssertionError(f"layout {layout}: {exc}") from None
        assert fingerprint(given) == before, f"layout {layout}: an input was modified"


def test_broadcast_inputs_are_accepted(rng):
    layer = small(grucy.GRU)
    x = np.broadcast_to(rng.standard_normal(3), (4, 2, 3))
    assert x.strides[0] == 0
    y, h = layer.forward(x, training=False)
    y2, h2 = layer.forward(np.ascontiguousarray(x), training=False)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(h, h2)


def test_linear_layouts_and_inputs_untouched(rng):
    lin = Linear(3, 2, dtype=np.float64, seed=0)
    x = rng.standard_normal((4, 5, 3))
    dy = rng.standard_normal((4, 5, 2))
    lin.forward(x)
    dx_expected = lin.backward(dy)
    g_expected = {k: v.copy() for k, v in lin.grads.items()}
    for (name, xv), dyv in zip(layouts(x).items(), layouts(dy).values()):
        lin.zero_grad()
        before = fingerprint([xv, dyv])
        lin.forward(xv)
        np.testing.assert_array_equal(lin.backward(dyv), dx_expected, err_msg=name)
        for k, g in g_expected.items():
            np.testing.assert_array_equal(lin.grads[k], g, err_msg=f"{name} {k}")
        assert fingerprint([xv, dyv]) == before, name


def test_linear_backward_does_not_see_later_edits_of_x(rng):
    lin = Linear(3, 2, dtype=np.float64, seed=0)
    x = rng.standard_normal((4, 3))
    lin.forward(x.copy())
    expected = lin.backward(np.ones((4, 2)))
    g = lin.grads["weight"].copy()
    lin.zero_grad()
    lin.forward(x)
    x[...] = 7
    np.testing.assert_array_equal(lin.backward(np.ones((4, 2))), expected)
    np.testing.assert_array_equal(lin.grads["weight"], g)


def test_optimizer_and_loss_leave_their_inputs_alone(rng):
    p = rng.standard_normal(5)
    g = rng.standard_normal(5)
    before = fingerprint(g)
    opt = Adam([p], [g], lr=0.1, weight_decay=0.01)
    opt.step()
    assert fingerprint(g) == before
    pred, target = rng.standard_normal(4), rng.standard_normal(4)
    before = fingerprint([pred, target])
    mse_loss(pred, target)
    assert fingerprint([pred, target]) == before


@pytest.mark.parametrize("cls", LAYERS, ids=LAYER_IDS)
def test_load_state_dict_does_not_modify_or_keep_its_input(cls):
    layer = small(cls)
    sd = small(cls, seed=5).state_dict()
    ro = {k: v.copy() for k, v in sd.items()}
    for v in ro.values():
        v.flags.writeable = False
    before = fingerprint(ro)
    layer.load_state_dict(ro)
    assert fingerprint(ro) == before
    layer.parameters()[0][...] = 0  # the layer holds copies, not the given arrays
    assert ro["weight_ih_l0"].any()


@pytest.mark.parametrize("cls", LAYERS, ids=LAYER_IDS)
def test_load_state_dict_of_own_views_swaps_correctly(cls):
    """Values aliasing the layer's own parameters (a direction swap) are read first."""
    layer = small(cls)
    sd = layer.state_dict()
    live = dict(layer.named_parameters())
    swapped = {}
    for k in live:
        other = k[:-len("_reverse")] if k.endswith("_reverse") else k + "_reverse"
        swapped[k] = live[other]
    layer.load_state_dict(swapped)
    for k, v in layer.state_dict().items():
        other = k[:-len("_reverse")] if k.endswith("_reverse") else k + "_reverse"
        np.testing.assert_array_equal(v, sd[other], err_msg=k)


# -- failed load_state_dict leaves the object untouched ------------------------------------
def _bad_state_dicts(good):
    last = list(good)[-1]  # the last key: every earlier value is valid and read first
    shape = good[last].shape
    cases = {
        "not a mapping": (list(good.values()), TypeError),
        "missing": ({k: v for k, v in good.items() if k != last}, ValueError),
        "unexpected": (dict(good, extra=np.zeros(3)), ValueError),
        "wrong shape": (dict(good, **{last: np.zeros(shape + (1,))}), ValueError),
        "NaN": (dict(good, **{last: np.full(shape, np.nan)}), ValueError),
        "inf": (dict(good, **{last: np.full(shape, -np.inf)}), ValueError),
        "complex": (dict(good, **{last: np.zeros(shape, complex)}), TypeError),
        "string": (dict(good, **{last: "weights"}), TypeError),
        "ragged": (dict(good, **{last: [[1.0], [1.0, 2.0]]}), ValueError),
        "float32 overflow": (dict(good, **{last: np.full(shape, 1e300)}), ValueError),
    }
    return cases


@pytest.mark.parametrize("make", [
    lambda: small(grucy.GRU, np.float32), lambda: small(reference.GRU),
    lambda: Linear(3, 2, dtype=np.float32, seed=0),
], ids=["GRU", "reference", "Linear"])
def test_failed_load_state_dict_leaves_object_untouched(make):
    obj = make()
    good = {k: v * 0.5 for k, v in make().state_dict().items()}
    arrays = obj.parameters()
    before = fingerprint(obj.state_dict())
    for case, (sd, exc) in _bad_state_dicts(good).items():
        if case == "float32 overflow" and obj.dtype != np.float32:
            continue
        with pytest.raises(exc):
            obj.load_state_dict(sd)
        assert fingerprint(obj.state_dict()) == before, case
        assert all(a is b for a, b in zip(arrays, obj.parameters())), case
    obj.load_state_dict(good)  # and it still loads a good one
    assert fingerprint(obj.state_dict()) == fingerprint(good)


# -- backward bookkeeping ------------------------------------------------------------------
@pytest.mark.parametrize("cls", LAYERS + [Linear], ids=LAYER_IDS + ["Linear"])
def test_backward_needs_the_latest_forward_to_be_a_successful_training_forward(cls, rng):
    if cls is Linear:
        layer = Linear(3, 2, dtype=np.float64, seed=0)
        x, dy = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
        bad_x = np.full((4, 3), np.nan)
    else:
        layer = small(cls)
        inputs = make_inputs(rng, layer, T=3, B=2)
        x, dy = inputs["x"], inputs["dy"]
        bad_x = np.full_like(x, np.nan)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(dy)  # never ran forward
    layer.forward(x)
    layer.backward(dy)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(dy)  # twice
    layer.forward(x, training=False)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(dy)  # after an inference forward
    layer.forward(x)
    with pytest.raises(ValueError, match="NaN"):
        layer.forward(bad_x)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(dy)  # the latest forward failed: nothing to backpropagate


# -- NaN / inf policy ----------------------------------------------------------------------
@pytest.mark.parametrize("cls", LAYERS, ids=LAYER_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=str)
def test_non_finite_inputs_and_gradients_are_refused(cls, dtype, value, rng):
    layer = small(cls, dtype)
    inputs = make_inputs(rng, layer, T=3, B=2)
    for arg, index in (("x", (2, 1, 0)), ("h0", (3, 0, 2))):
        kwargs = dict(x=inputs["x"].copy(), h0=inputs["h0"].copy())
        kwargs[arg][index] = value
        with pytest.raises(ValueError, match=rf"^{arg} contains NaN or inf \(first at "
                                             rf"index {re.escape(str(index))}"):
            layer.forward(**kwargs)
    expected = run_layer(layer, inputs)
    layer.zero_grad()
    layer.forward(inputs["x"], inputs["h0"])
    for arg, index in (("dy", (1, 1, 7)), ("dh_n", (0, 1, 3))):
        kwargs = dict(dy=inputs["dy"].copy(), dh_n=inputs["dh_n"].copy())
        kwargs[arg][index] = value
        with pytest.raises(ValueError, match=rf"^{arg} contains NaN or inf"):
            layer.backward(**kwargs)
    assert not any(g.any() for g in layer.grads.values())  # nothing accumulated
    dx, dh0 = layer.backward(inputs["dy"], inputs["dh_n"])  # the forward is still there
    np.testing.assert_array_equal(dx, expected["dx"])


def test_float64_values_beyond_float32_are_refused_after_the_cast(rng):
    layer = small(grucy.GRU, np.float32)
    x = make_inputs(rng, layer, T=3, B=2)["x"].astype(np.float64)
    x[0, 0, 0] = 1e39  # finite in float64, inf in float32
    with pytest.raises(ValueError, match=r"^x contains NaN or inf \(first at index "
                                         r"\(0, 0, 0\)"):
        layer.forward(x)


@pytest.mark.parametrize("cls", LAYERS, ids=LAYER_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("param", ["weight_ih_l0", "weight_hh_l1_reverse", "bias_ih_l1"])
@pytest.mark.parametrize("value", [np.nan, np.inf], ids=str)
def test_parameters_made_non_finite_in_place_are_named(cls, dtype, param, value, rng):
    layer = small(cls, dtype)
    inputs = make_inputs(rng, layer, T=4, B=2, lengths=True)
    dict(layer.named_parameters())[param].reshape(-1)[5] = value
    for training in (True, False):
        with pytest.raises(ValueError, match=rf"parameter '{param}' contains NaN or inf"):
            layer.forward(inputs["x"], inputs["h0"], lengths=inputs["lengths"],
                          training=training)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(inputs["dy"])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("cls", LAYERS, ids=LAYER_IDS)
def test_overflow_inside_the_cell_is_reported_not_returned(cls):
    """Finite weights and inputs whose products overflow: r = sigmoid(-inf) = 0 meets
    W_hn h = inf, and 0 * inf is NaN.  (float64, where both layers compute exp exactly.)"""
    layer = cls(1, 2, bias=False, dtype=np.float64, seed=0)
    p = dict(layer.named_parameters())
    p["weight_ih_l0"][...] = 0
    p["weight_hh_l0"][...] = 1
    p["weight_hh_l0"][:2] = -1  # r gate: -inf
    h0 = np.full((1, 1, 2), 1e308)
    with pytest.raises(ValueError, match="overflowed"):
        layer.forward(np.zeros((1, 1, 1)), h0)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_overflow_of_a_single_number_shows_its_value_and_blames_no_dtype():
    """float32 inputs whose difference overflows float32, summed into a float64 loss:
    the message showed an empty value at index () and blamed float64."""
    with pytest.raises(ValueError, match=r"^the loss overflowed to NaN or inf \(value "
                                         r"inf\): the numbers it was computed from are too "
                                         r"large for their dtype$") as info:
        mse_loss(np.float32([3e38]), np.float32([-3e38]))
    assert "float64" not in str(info.value) and "index ()" not in str(info.value)


def test_linear_nan_policy(rng):
    lin = Linear(3, 2, dtype=np.float64, seed=0)
    x = rng.standard_normal((4, 3))
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"^x contains NaN or inf \(first at index \(2, 1\)"):
        lin.forward(bad)
    lin.forward(x)
    with pytest.raises(ValueError, match="^dy contains NaN"):
        lin.backward(np.full((4, 2), np.inf))
    lin.weight[0, 0] = np.nan
    with pytest.raises(ValueError, match="parameter 'weight' contains NaN"):
        lin.forward(x)


def test_mse_loss_refuses_non_finite():
    with pytest.raises(ValueError, match="^target contains NaN"):
        mse_loss(np.zeros(3), [0.0, np.nan, 1.0])
    with pytest.raises(ValueError, match="^pred contains NaN"):
        mse_loss([np.inf, 0.0], np.zeros(2))


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=str)
def test_adam_refuses_non_finite_gradients_and_changes_nothing(value, rng):
    params = [rng.standard_normal((3, 2)), rng.standard_normal(4)]
    grads = [rng.standard_normal((3, 2)), rng.standard_normal(4)]
    opt = Adam(params, grads, lr=0.1)
    opt.step()
    state = copy.deepcopy((params, opt.exp_avg, opt.exp_avg_sq, opt.t))
    grads[1][2] = value
    with pytest.raises(ValueError, match=r"^grads\[1\] contains NaN or inf .*updated "
                                         r"nothing"):
        opt.step()
    for a, b in zip(params + opt.exp_avg + opt.exp_avg_sq,
                    state[0] + state[1] + state[2]):
        np.testing.assert_array_equal(a, b)
    assert opt.t == state[3]
    grads[1][2] = 0.5
    opt.step()  # recovers once the gradient is finite again
    assert opt.t == 2 and all(np.isfinite(p).all() for p in params)


def test_adam_eps_must_be_positive():
    with pytest.raises(ValueError, match="eps must be > 0"):
        Adam([np.zeros(2)], [np.zeros(2)], eps=0.0)


def test_clip_grad_norm_reports_non_finite_and_scales_nothing():
    grads = [np.array([1.0, np.inf]), np.array([3.0])]
    assert clip_grad_norm(grads, 1.0) == np.inf
    np.testing.assert_array_equal(grads[1], [3.0])


def test_training_with_finite_data_keeps_weights_finite(rng):
    """A large learning rate on a real training loop: the weights stay finite (Adam's
    step is bounded by lr) and every forward succeeds."""
    gru = grucy.GRU(2, 8, dtype=np.float32, seed=0)
    head = Linear(8, 1, dtype=np.float32, seed=1)
    opt = Adam(gru.parameters() + head.parameters(),
               list(gru.grads.values()) + list(head.grads.values()), lr=5.0)
    x = rng.standard_normal((6, 4, 2)).astype(np.float32)
    target = rng.standard_normal((4, 1)) * 100
    for _ in range(30):
        gru.zero_grad()
        head.zero_grad()
        _, h = gru.forward(x)
        pred = head.forward(h[0])
        _, d = mse_loss(pred, target)
        gru.backward(np.zeros((6, 4, 8), np.float32), dh_n=head.backward(d)[None])
        opt.step()
    assert all(np.isfinite(p).all() for p in opt.params)


# -- sizes: refused before allocating ------------------------------------------------------
@pytest.mark.parametrize("args, kwargs, match", [
    ((1, 2**30), {}, r"3\*hidden_size"),
    ((2**40, 4), {}, r"3\*hidden_size"),
    ((1, 26755), {}, r"3\*hidden_size"),  # 3 H^2 just above 2**31 - 1
    ((3, 2**14), dict(num_layers=3, bidirectional=True, dtype=np.float64), "GiB"),
])
def test_huge_layers_are_refused_before_allocating(args, kwargs, match):
    tracemalloc.start()
    try:
        with pytest.raises(SizeLimitError, match=match):
            grucy.GRU(*args, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_size_limit_error_is_value_and_memory_error(monkeypatch):
    assert issubclass(SizeLimitError, ValueError) and issubclass(SizeLimitError, MemoryError)
    # 3 H^2 = 2147365548 still fits in an int32: refused for its memory only.
    monkeypatch.setenv("GRUCY_MAX_MEMORY", "1G")
    # the limit's source: the variable when it is set (not "physical memory, ...")
    with pytest.raises(SizeLimitError, match=r"GiB grucy may use \(GRUCY_MAX_MEMORY=1G\)$"):
        grucy.GRU(1, 26754)
    monkeypatch.delenv("GRUCY_MAX_MEMORY")
    with pytest.raises(SizeLimitError, match=r"\(physical memory, container and ulimit -v "
                                             r"limits; set GRUCY_MAX_MEMORY to change\)$"):
        grucy.GRU(1, 26754, num_layers=10**5)   # (~0.9 TB of weights)


def test_forward_over_the_memory_limit_is_refused_before_allocating(monkeypatch, rng):
    layer = grucy.GRU(16, 64, dtype=np.float32, seed=0)
    x = rng.standard_normal((200, 32, 16)).astype(np.float32)
    monkeypatch.setenv("GRUCY_MAX_MEMORY", "1M")
    assert memory_limit() == 2**20
    tracemalloc.start()
    try:
        with pytest.raises(SizeLimitError, match=r"training forward of x with shape "
                                                 r"\(200, 32, 16\).*GRUCY_MAX_MEMORY"):
            layer.forward(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 10, peak
    with pytest.raises(SizeLimitError):
        Linear(1000, 1000)
    monkeypatch.setenv("GRUCY_MAX_MEMORY", "1G")
    layer.forward(x)  # fits now


def test_int32_overflow_of_batch_times_steps_is_refused(monkeypatch):
    monkeypatch.setenv("GRUCY_MAX_MEMORY", "1P")  # the int check, not memory, must refuse
    layer = grucy.GRU(1, 1)
    x = np.broadcast_to(np.float32(0), (2**16, 2**15 + 1, 1))  # no memory behind it
    with pytest.raises(SizeLimitError, match=r"T\*B = 2147549184 exceeds 2\*\*31-1"):
        layer.forward(x)
    wide = grucy.GRU(1, 2**11)
    x = np.broadcast_to(np.float32(0), (1, 2**19, 1))  # B*3H = 3 * 2**30
    with pytest.raises(SizeLimitError, match=r"B\*3\*hidden_size"):
        wide.forward(x)


@pytest.mark.parametrize("text, value", [("123", 123), ("16G", 16 * 2**30), ("8e9", 8e9),
                                         ("1.5 GiB", 1.5 * 2**30), ("2k", 2048)])
def test_memory_limit_parsing(text, value):
    assert _parse_bytes(text) == int(value)


@pytest.mark.parametrize("text", ["lots", "-1", "0", "G", "inf", "nan"])
def test_bad_memory_limit_is_refused(monkeypatch, text):
    monkeypatch.setenv("GRUCY_MAX_MEMORY", text)
    with pytest.raises(ValueError, match="GRUCY_MAX_MEMORY"):
        grucy.GRU(1, 1)


# -- copies ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", LAYERS + [Linear], ids=LAYER_IDS + ["Linear"])
def test_copies_and_pickles_are_independent_working_layers(cls, rng):
    layer = Linear(3, 2, seed=0) if cls is Linear else small(cls)
    for twin in (copy.copy(layer), copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert twin._lock is not layer._lock
        x = rng.standard_normal((4, 2, 3))
        a = layer.forward(x, training=False)
        b = twin.forward(x, training=False)
        np.testing.assert_array_equal(a[0] if isinstance(a, tuple) else a,
                                      b[0] if isinstance(b, tuple) else b)


# -- streaming: same policies ------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_stream_step_layouts_are_bitwise_identical_and_inputs_untouched(dtype, rng):
    layer = grucy.GRU(3, 5, num_layers=2, dtype=dtype, seed=0)
    xs = rng.standard_normal((6, 4, 3))
    h0 = 0.5 * rng.standard_normal((2, 4, 5))
    ref = layer.stream(4, h0)
    expected = [ref.step(x.astype(dtype)) for x in xs]
    for name, variants in {k: [layouts(x)[k] for x in xs] for k in layouts(xs[0])}.items():
        h0_variant = layouts(h0).get(name, h0)
        before = fingerprint([variants, h0_variant])
        s = layer.stream(4, h0_variant)
        for t, x in enumerate(variants):
            np.testing.assert_array_equal(s.step(x), expected[t], err_msg=name)
        assert fingerprint([variants, h0_variant]) == before, name
        np.testing.assert_array_equal(s.h, ref.h, err_msg=name)


def test_stream_refused_step_leaves_the_state_alone(rng):
    s = grucy.GRU(3, 4, seed=0).stream(2)
    s.step(rng.standard_normal((2, 3)))
    h = s.h
    for bad, exc in ((np.full((2, 3), np.nan), ValueError), (np.ones((3, 2)), ValueError),
                     (np.ones((2, 3), complex), TypeError)):
        with pytest.raises(exc):
            s.step(bad)
        np.testing.assert_array_equal(s.h, h)


def test_stream_refuses_non_finite_parameters_at_creation():
    g = grucy.GRU(3, 4, seed=0)
    g.parameters()[2][1] = np.nan
    with pytest.raises(ValueError, match="parameter 'bias_ih_l0' contains NaN"):
        g.stream()
    with pytest.raises(ValueError, match="parameter 'bias_ih_l0' contains NaN"):
        g.step(np.ones((1, 3)))


def test_stream_keeps_its_checked_snapshot_when_parameters_go_nan():
    g = grucy.GRU(3, 4, seed=0)
    s = g.stream()
    y = s.step(np.ones(3))
    s.reset()
    g.parameters()[1][0, 0] = np.nan
    np.testing.assert_array_equal(s.step(np.ones(3)), y)  # the snapshot's weights
    h = s.h
    with pytest.raises(ValueError, match="weight_hh_l0 contains NaN or inf"):
        s.refresh()
    np.testing.assert_array_equal(s.h, h)


def test_stream_size_limits(monkeypatch):
    g = grucy.GRU(3, 64, num_layers=2)
    monkeypatch.setenv("GRUCY_MAX_MEMORY", "1M")
    with pytest.raises(SizeLimitError, match="stream of batch_size=4096"):
        g.stream(4096)
    g.stream(16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_matches_numpy(dtype):
    """The C finite check behind every NaN/inf refusal, against np.isfinite: each
    non-finite kind at every position class (vector body, tail, first, last), extreme
    finite values, and the arrays it hands back to NumPy (None)."""
    from grucy import _gru
    rng = np.random.default_rng(0)
    info = np.finfo(dtype)
    for n in [1, 15, 16, 17, 63, 64, 65, 1000]:
        base = rng.standard_normal(n).astype(dtype)
        assert _gru.all_finite(base) is True
        for bad in [np.nan, -np.nan, np.inf, -np.inf]:
            for pos in {0, n // 2, n - 1}:
                a = base.copy()
                a[pos] = bad
                assert _gru.all_finite(a) is False, (n, bad, pos)
        a = base.copy()
        a[[0, n - 1]] = [info.max, -info.tiny / 2]  # largest and a subnormal: finite
        assert _gru.all_finite(a) is True
    assert _gru.all_finite(np.ones((4, 4), dtype)[:, ::2]) is None  # not contiguous
    assert _gru.all_finite(np.ones(3, np.int64)) is None
    assert _gru.all_finite(np.ones(0, dtype)) is True


def test_load_state_dict_into_read_only_parameters_changes_nothing(tmp_path):
    # (joblib's mmap_mode="r" gives read-only parameters: the first ones were
    # overwritten, then NumPy's "assignment destination is read-only" named none)
    g = grucy.GRU(3, 4, seed=0)
    new = grucy.GRU(3, 4, seed=1).state_dict()
    before = g.state_dict()
    g.parameters()[1].flags.writeable = False
    with pytest.raises(ValueError, match=r"parameter 'weight_hh_l0' is read-only"):
        g.load_state_dict(new)
    for k, v in g.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_layer_indices_step_state_and_grads_are_named():
    g = grucy.GRU(3, 4, num_layers=2, seed=0)
    with pytest.raises(ValueError, match=r"^layer must be in 0..1, got 2$"):
        g.layer_params(2, 0)
    with pytest.raises(ValueError, match=r"^direction must be in 0..0 \(bidirectional="
                                         r"False\), got 1$"):
        g.layer_grads(0, 1)
    bi = grucy.GRU(3, 4, bidirectional=True, seed=0)
    for d in (2, -1):  # (read as the reverse direction)
        with pytest.raises(ValueError, match=r"^direction must be in 0..1"):
            bi.layer_params(0, d)
    with pytest.raises(ValueError, match=r"^step\(\) needs a unidirectional GRU"):
        bi.step(np.ones((2, 3), np.float32))
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"^h must have shape \(num_layers, batch_size, "
                                         r"hidden_size\) = \(2, 2, 4\)"):
        g.step(x, np.zeros((2, 1, 4), np.float32))   # (it was called h0)
    # a replaced grads is named as grads, and inference does not need it
    want = g(np.ones((5, 2, 3), np.float32), training=False)[0]
    g.grads = {}
    np.testing.assert_array_equal(g(np.ones((5, 2, 3), np.float32), training=False)[0],
                                  want)
    y, _ = g(np.ones((5, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"^grads\['weight_ih_l0'\] must be a writeable"):
        g.backward(np.ones_like(y))
    g.grads = None
    with pytest.raises(ValueError, match=r"^grads must be the dict of gradient arrays"):
        g.backward(np.ones_like(y))
