"""The pieces above the GRU layer: Linear, mse_loss, Adam, clip_grad_norm, the shipped
data sets, the sunspot forecaster end to end, and the command line."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import grucy
from grucy.datasets import load_co2, load_sunspots
from grucy.nn import Linear, mse_loss
from grucy.optim import Adam, clip_grad_norm

from conftest import central_difference


# -- Linear -------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_linear_backward_matches_finite_differences(bias):
    rng = np.random.default_rng(0)
    layer = Linear(4, 3, bias=bias, dtype=np.float64, seed=1)
    x = rng.normal(size=(2, 5, 4))  # leading axes are batch axes
    w = rng.normal(size=(2, 5, 3))

    def loss():
        return float(np.sum(layer.forward(x, training=False) * w))

    layer.forward(x)
    dx = layer.backward(w)
    np.testing.assert_allclose(dx, central_difference(loss, x), rtol=1e-7, atol=1e-9)
    for name, param in layer.named_parameters():
        np.testing.assert_allclose(layer.grads[name], central_difference(loss, param),
                                   rtol=1e-7, atol=1e-9)
    assert list(layer.grads) == (["weight", "bias"] if bias else ["weight"])


def test_linear_forward_matches_numpy_and_grads_accumulate():
    rng = np.random.default_rng(0)
    layer = Linear(3, 2, dtype=np.float32, seed=0)
    x = rng.normal(size=(7, 3)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32 and y.shape == (7, 2)
    np.testing.assert_allclose(y, x @ layer.weight.T + layer.parameters()[1], rtol=1e-6)
    dy = np.ones_like(y)
    layer.backward(dy)
    once = {k: g.copy() for k, g in layer.grads.items()}
    layer.forward(x)
    layer.backward(dy)
    for k in once:
        np.testing.assert_allclose(layer.grads[k], 2 * once[k], rtol=1e-6)
    layer.zero_grad()
    assert all(not g.any() for g in layer.grads.values())


def test_linear_state_dict_round_trip_and_errors():
    a = Linear(3, 2, dtype=np.float64, seed=0)
    b = Linear(3, 2, dtype=np.float64, seed=1)
    params = b.parameters()
    b.load_state_dict(a.state_dict())
    assert all(p is q for p, q in zip(params, b.parameters()))  # updated in place
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({"weight": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="shape"):
        b.load_state_dict({"weight": np.zeros((3, 2)), "bias": np.zeros(2)})
    with pytest.raises(ValueError, match="in_features"):
        a.forward(np.zeros((4, 5)))
    with pytest.raises(RuntimeError, match="forward"):
        Linear(3, 2).backward(np.zeros((1, 2)))


def test_linear_seed_reproducible():
    a, b = Linear(5, 4, seed=3), Linear(5, 4, seed=3)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert np.all(np.abs(a.weight) <= 1 / np.sqrt(5))


# -- mse_loss -----------------------------------------------------------------------------
def test_mse_loss_value_and_gradient():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(4, 3))
    target = rng.normal(size=(4, 3))
    loss, dpred = mse_loss(pred, target)
    assert loss == pytest.approx(np.mean((pred - target) ** 2), rel=1e-14)
    np.testing.assert_allclose(dpred, central_difference(lambda: mse_loss(pred, target)[0], pred),
                               rtol=1e-7, atol=1e-10)
    loss32, d32 = mse_loss(pred.astype(np.float32), target)
    assert d32.dtype == np.float32 and isinstance(loss32, float)
    with pytest.raises(ValueError, match="same shape"):
        mse_loss(pred, target[:2])


# -- Adam ---------------------------------------------------------------------------------
def test_adam_two_steps_by_hand():
    p = np.array([1.0, -2.0])
    g = np.zeros(2)
    opt = Adam([p], [g], lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    # t=1, g = (0.5, -1): m = 0.1 g, v = 0.001 g^2, m/(1-0.9) = g, v/(1-0.999) = g^2,
    # p -= 0.1 * g / (|g| + 1e-8)  ->  (1 - 0.1*0.5/0.50000001, -2 + 0.1*1/1.00000001)
    g[:] = [0.5, -1.0]
    opt.step()
    np.testing.assert_allclose(p, [0.900000002, -1.900000001], rtol=0, atol=1e-15)
    # t=2, g = (0.1, 0.2): m = 0.9 m + 0.1 g = (0.055, -0.07),
    # v = 0.999 v + 0.001 g^2 = (0.00025975, 0.001039); bias corrections 0.19 and 0.001999:
    # p0 -= 0.1 * (0.055/0.19) / (sqrt(0.00025975/0.001999) + 1e-8) = 0.080304096...
    # p1 -= 0.1 * (-0.07/0.19) / (sqrt(0.001039/0.001999) + 1e-8) = -0.051102607...
    g[:] = [0.1, 0.2]
    opt.step()
    np.testing.assert_allclose(p, [0.8196959063846518, -1.8488973939904947],
                               rtol=0, atol=1e-14)
    np.testing.assert_allclose(opt.exp_avg[0], [0.055, -0.07], rtol=1e-14)
    np.testing.assert_allclose(opt.exp_avg_sq[0], [0.00025975, 0.001039], rtol=1e-14)
    assert opt.t == 2


def test_adam_weight_decay_is_l2_added_to_gradient():
    p = np.array([2.0])
    g = np.array([0.0])
    Adam([p], [g], lr=0.5, weight_decay=0.1).step()
    # effective gradient 0 + 0.1*2 = 0.2 > 0, first step moves by lr * sign
    np.testing.assert_allclose(p, [2.0 - 0.5 * 0.2 / (0.2 + 1e-8)], rtol=1e-15)
    assert g[0] == 0.0  # the gradient array itself is left alone


def test_adam_zero_grad_and_float32():
    p = np.ones((2, 2), np.float32)
    g = np.full((2, 2), 3.0, np.float32)
    opt = Adam([p], [g], lr=0.01)
    opt.step()
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, 0.99, rtol=1e-6)
    opt.zero_grad()
    assert not g.any()


def test_adam_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p_np = [rng.normal(size=(3, 4)), rng.normal(size=5)]
    g_np = [np.zeros_like(p) for p in p_np]
    p_t = [torch.tensor(p.copy(), requires_grad=True) for p in p_np]
    opt = Adam(p_np, g_np, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)
    opt_t = torch.optim.Adam(p_t, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)
    for _ in range(5):
        for g, pt in zip(g_np, p_t):
            g[...] = rng.normal(size=g.shape)
            pt.grad = torch.tensor(g.copy())
        opt.step()
        opt_t.step()
    for p, pt in zip(p_np, p_t):
        np.testing.assert_allclose(p, pt.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-1.0), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(betas=(1.0, 0.999)), r"betas\[0\]"),
    (dict(betas=(0.9, -0.1)), r"betas\[1\]"),
    (dict(betas=(0.9,)), "betas"),
    (dict(eps=-1e-8), "eps"),
    (dict(weight_decay=-0.1), "weight_decay"),
])
def test_adam_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Adam([np.zeros(2)], [np.zeros(2)], **kwargs)


def test_adam_rejects_mismatched_params_and_grads():
    p = np.zeros(2)
    with pytest.raises(ValueError, match="same length"):
        Adam([p], [])
    with pytest.raises(ValueError, match=r"grads\[0\] has shape"):
        Adam([p], [np.zeros(3)])
    with pytest.raises(ValueError, match="params must not be empty"):
        Adam([], [])
    with pytest.raises(ValueError, match="more than once"):
        Adam([p, p], [np.zeros(2), np.zeros(2)])
    with pytest.raises(TypeError, match=r"params\[0\]"):
        Adam([[0.0, 1.0]], [np.zeros(2)])
    frozen = np.zeros(2)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        Adam([frozen], [np.zeros(2)])


# -- clip_grad_norm -----------------------------------------------------------------------
def test_clip_grad_norm_scales_to_max_norm():
    grads = [np.array([3.0, 4.0]), np.array([[12.0]])]  # global norm 13
    total = clip_grad_norm(grads, 6.5)
    assert total == pytest.approx(13.0, rel=1e-15)
    scale = 6.5 / (13.0 + 1e-6)
    np.testing.assert_allclose(grads[0], [3 * scale, 4 * scale], rtol=1e-15)
    np.testing.assert_allclose(grads[1], [[12 * scale]], rtol=1e-15)
    assert np.sqrt(sum(np.sum(g**2) for g in grads)) == pytest.approx(6.5, rel=1e-6)


def test_clip_grad_norm_leaves_small_gradients_alone():
    grads = {"a": np.array([0.3, 0.4], np.float32)}  # a layer's grads dict works too
    assert clip_grad_norm(grads, 1.0) == pytest.approx(0.5, rel=1e-6)
    np.testing.assert_array_equal(grads["a"], np.array([0.3, 0.4], np.float32))
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(grads, 0.0)


# -- data sets ----------------------------------------------------------------------------
def test_load_sunspots():
    years, values = load_sunspots()
    assert years.dtype == np.int64 and values.dtype == np.float64
    assert len(years) == len(values) == 309
    assert (years[0], values[0]) == (1700, 5.0)
    assert (years[-1], values[-1]) == (2008, 2.9)
    np.testing.assert_array_equal(years, np.arange(1700, 2009))
    assert np.all(np.isfinite(values)) and values.min() >= 0


def test_load_co2():
    dates, values = load_co2()
    assert dates.dtype == np.dtype("datetime64[D]") and values.dtype == np.float64
    assert len(dates) == len(values) == 2284
    assert (dates[0], values[0]) == (np.datetime64("1958-03-29"), 316.1)
    assert (dates[-1], values[-1]) == (np.datetime64("2001-12-29"), 371.5)
    assert np.all(np.diff(dates) == np.timedelta64(7, "D"))  # weekly, no gaps in dates
    assert np.isnan(values).sum() == 59  # the rows with an empty co2 field
    assert np.nanmin(values) > 300 and np.nanmax(values) < 400


# -- forecaster, end to end ---------------------------------------------------------------
def _sunspot_split(lookback):
    years, values = load_sunspots()
    train = values[years <= 1978]
    test_idx = np.flatnonzero(years > 1978)
    windows = np.stack([values[i - lookback:i] for i in test_idx])
    return train, windows, values[test_idx], values[test_idx - 1]


def test_forecaster_learns_sunspots():
    from grucy.forecast import SequenceForecaster

    train, windows, actual, persistence = _sunspot_split(12)
    model = SequenceForecaster(lookback=12, hidden_size=32, seed=0)
    model.fit(train, epochs=25)
    losses = model.loss_history_
    assert len(losses) == 25
    assert losses[-1] < 0.5 * losses[0]
    pred = model.predict_next(windows)
    assert pred.shape == actual.shape
    rmse = np.sqrt(np.mean((pred - actual) ** 2))
    rmse_persistence = np.sqrt(np.mean((persistence - actual) ** 2))
    assert rmse < 0.75 * rmse_persistence
    # float32 by default: a batch of one may round differently from a batch of 30
    assert model.predict_next(windows[0]) == pytest.approx(pred[0], rel=1e-5)


def test_forecaster_is_reproducible():
    from grucy.forecast import SequenceForecaster

    train, windows, _, _ = _sunspot_split(6)
    preds = [SequenceForecaster(6, 8, seed=5).fit(train, epochs=2).predict_next(windows)
             for _ in range(2)]
    np.testing.assert_array_equal(preds[0], preds[1])


def test_forecaster_errors():
    from grucy.forecast import SequenceForecaster, sliding_windows

    model = SequenceForecaster(lookback=4, hidden_size=4, seed=0)
    with pytest.raises(RuntimeError, match="fit"):
        model.predict_next(np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        model.fit([1.0, np.nan, 2.0, 3.0, 4.0, 5.0])
    model.fit(np.arange(10.0), epochs=1)
    with pytest.raises(ValueError, match="lookback=4"):
        model.predict_next(np.zeros((2, 5)))
    X, y = sliding_windows(np.arange(6.0), 4)
    np.testing.assert_array_equal(X, [[0, 1, 2, 3], [1, 2, 3, 4]])
    np.testing.assert_array_equal(y, [4, 5])
    with pytest.raises(ValueError, match="more than lookback"):
        sliding_windows(np.arange(4.0), 4)


# -- command line -------------------------------------------------------------------------
def test_cli_demo_quiet(capsys):
    from grucy.cli import main

    assert main(["demo", "--quiet", "--seed", "0"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("rmse_model=")
    numbers = dict(item.split("=") for item in out[0].split())
    assert float(numbers["rmse_model"]) < float(numbers["rmse_persistence"])


def test_cli_without_command_prints_help(capsys):
    from grucy.cli import main

    assert main([]) == 2
    assert "demo" in capsys.readouterr().err


def _env_with_grucy_on_path():
    env = dict(os.environ)
    src = str(Path(grucy.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return env


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["--version"]])
def test_python_dash_m_grucy(argv):
    proc = subprocess.run([sys.executable, "-m", "grucy", *argv], capture_output=True,
                          text=True, timeout=60, env=_env_with_grucy_on_path())
    assert proc.returncode == 0, proc.stderr
    assert "grucy" in proc.stdout


@pytest.mark.skipif(shutil.which("grucy") is None, reason="console script not installed")
def test_console_script_help():
    proc = subprocess.run(["grucy", "demo", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--seed" in proc.stdout
