"""Issue 15's silent nonsense in training: a diverged fit is a TrainingDivergedError naming
where, the model is left as it was before fit; data near the float64 limit never gives
inf predictions; a failed fit never leaves a half-fitted model.
"""

from __future__ import annotations

import numpy as np
import pytest

import grucy
from grucy._validation import NumericOverflowError
from grucy.distributed import SingleProcess
from grucy.losses import mse_loss
from grucy.nn import Linear, Sequential
from grucy.training import ArrayTask, Trainer, TrainingDivergedError

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 8, 3))
    return X, X.sum(axis=(1, 2))


def _diverging(**options):
    return grucy.GRURegressor(hidden_size=8, epochs=4, lr=1e4, optimizer="sgd",
                              max_grad_norm=None, random_state=0, **options)


def test_a_diverged_fit_raises_and_leaves_an_unfitted_model_unfitted():
    X, y = _data()
    model = _diverging()
    with pytest.raises(TrainingDivergedError, match=r"training diverged in epoch \d+, "
                                                    r"after \d+ optimizer steps: .*"
                                                    r"overflowed.*Lower the learning "
                                                    r"rate \(lr=10000\)") as info:
        model.fit(X, y)
    text = str(info.value)
    assert "dy contains" not in text and "written in place" not in text
    assert info.value.epoch >= 1 and info.value.step >= 0 and info.value.where
    assert isinstance(info.value, RuntimeError) and grucy.TrainingDivergedError is \
        TrainingDivergedError
    assert vars(model) == vars(_diverging())  # nothing fitted, nothing half-set
    with pytest.raises(grucy.NotFittedError):
        model.predict(X)


def test_a_diverged_refit_keeps_the_previous_fit():
    X, y = _data()
    model = grucy.GRURegressor(hidden_size=8, epochs=2, random_state=0).fit(X, y)
    before = model.predict(X)
    state = dict(vars(model))
    model.set_params(lr=1e4, optimizer="sgd", max_grad_norm=None, epochs=4)
    with pytest.raises(TrainingDivergedError):
        model.fit(X, y)
    assert all(vars(model)[k] is v for k, v in state.items() if k not in
               ("lr", "optimizer", "max_grad_norm", "epochs"))
    np.testing.assert_array_equal(model.predict(X), before)


def test_any_failed_fit_leaves_the_model_as_it_was():
    X, y = _data()
    model = grucy.GRURegressor(hidden_size=8, epochs=1, random_state=0)
    with pytest.raises(ValueError):
        model.fit(X, y[:-1])  # X checked (and n_features_in_ set) before y fails
    assert not hasattr(model, "n_features_in_") and not hasattr(model, "net_")


@pytest.mark.parametrize("make", [
    lambda: grucy.Forecaster(lookback=4, hidden_size=8, epochs=3, lr=1e4,
                             optimizer="sgd", max_grad_norm=None, random_state=0),
    lambda: grucy.GRUClassifier(hidden_size=8, epochs=3, lr=1e39, optimizer="sgd",
                                max_grad_norm=None, random_state=0),
    lambda: grucy.CharLM(hidden_size=8, embedding_dim=4, bptt=8, batch_size=4, epochs=3,
                         lr=1e39, optimizer="sgd", max_grad_norm=None, random_state=0,
                         validation_fraction=0.0),
])
def test_every_model_reports_divergence_and_stays_unfitted(make):
    model = make()
    rng = np.random.default_rng(1)
    data = {"series": (10 * rng.standard_normal(200).cumsum(),),
            "sequences": (rng.standard_normal((64, 6, 2)), rng.integers(0, 3, 64)),
            "text": ("the quick brown fox jumps over the lazy dog " * 20,)}[model.input_kind]
    with pytest.raises(TrainingDivergedError, match="diverged"):
        model.fit(*data)
    assert not hasattr(model, "net_") and not hasattr(model, "history_")


def _small_task():
    """A two-layer float64 regression task of 32 rows: (net, task)."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(32, 3)), rng.normal(size=(32, 2))
    net = Sequential(Linear(3, 5, dtype=np.float64, seed=1),
                     Linear(5, 2, dtype=np.float64, seed=2))
    return net, ArrayTask(net, X, Y, mse_loss, np.arange(32))


def test_the_error_names_the_last_checkpoint(tmp_path):
    net, task = _small_task()
    backward, calls = net.backward, {"n": 0}

    def poisoned(dy):  # the 10th backward (epoch 3 of 4 steps each) overflows
        calls["n"] += 1
        if calls["n"] == 10:
            raise NumericOverflowError("Linear.backward: dx overflowed to NaN or inf")
        return backward(dy)

    net.backward = poisoned
    trainer = Trainer(task, epochs=5, batch_size=8, seed=0,
                      checkpoint=tmp_path / "ck-{epoch}.grucy")
    with pytest.raises(TrainingDivergedError, match="epoch 3, after 9 optimizer steps: "
                                                    "Linear.backward: dx overflowed") as info:
        trainer.fit()
    assert info.value.checkpoint == str(tmp_path / "ck-2.grucy")
    assert info.value.epoch == 3 and info.value.step == 9


class _OtherRankOverflowed(SingleProcess):
    """Two processes, the other one's gradients overflowed in step 3: its NaN arrives
    in the sum (as grucy's loop makes every rank add NaN when its step failed)."""

    size = 2

    def __init__(self):
        super().__init__()
        self.calls = 0

    def allreduce_sum_(self, arrays):
        self.calls += 1
        if self.calls == 3:
            for a in arrays:
                a += np.nan
        return arrays


def test_a_failure_on_another_process_stops_every_process_with_the_same_error():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(64, 3)), rng.normal(size=(64, 2))
    net = Sequential(Linear(3, 5, dtype=np.float64, seed=1),
                     Linear(5, 2, dtype=np.float64, seed=2))
    task = ArrayTask(net, X, Y, mse_loss, np.arange(64))
    start = [p.copy() for p in task.parameters()]
    with pytest.raises(TrainingDivergedError, match="after 2 optimizer steps: the gradient "
                                                    "of '0.weight' is not finite "
                                                    r"\(summed over the processes"):
        Trainer(task, epochs=1, batch_size=8, seed=0,
                distributed=_OtherRankOverflowed()).fit()
    for p, s in zip(task.parameters(), start):
        np.testing.assert_array_equal(p, s)


def test_an_optimizer_step_that_overflows_is_named():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(32, 3)), rng.normal(size=(32, 2))
    net = Sequential(Linear(3, 2, dtype=np.float32, seed=1))
    task = ArrayTask(net, X.astype(np.float32), Y.astype(np.float32), mse_loss,
                     np.arange(32))
    with pytest.raises(TrainingDivergedError, match="parameter '0.(weight|bias)' became "
                                                    "NaN or inf in the SGD step"):
        Trainer(task, epochs=1, batch_size=8, optimizer="sgd", lr=1e39, seed=0).fit()


# -- data near the float64 limit: standardised without overflow, never inf predictions ------
def test_targets_near_the_float64_limit_fit_or_raise_never_predict_inf():
    """The issue's case: training data with +-1e308 gave -inf predictions."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5))
    y = np.where(X[:, 0] > 0, 1e308, -1e308)
    model = grucy.GRURegressor(hidden_size=4, epochs=2, random_state=0).fit(X, y)
    assert np.isfinite(model.y_mean_).all() and np.isfinite(model.y_scale_).all()
    assert model.y_scale_[0] == pytest.approx(1e308, rel=0.01)
    try:
        pred = model.predict(X)
    except NumericOverflowError as exc:  # the readout's value times 1e308 overflowed
        assert "y_scale_" in str(exc)
    else:
        assert np.isfinite(pred).all()
    Xbig = X * (1e308 / 4)  # features near the limit are standardised too
    fitted = grucy.GRURegressor(hidden_size=4, epochs=1, random_state=0).fit(Xbig, X[:, 0])
    assert np.isfinite(fitted.predict(Xbig)).all()


def test_data_whose_standardisation_overflows_is_refused_naming_it():
    y = np.array([1.7e308] + [-1.7e308] * 99)  # y - mean exceeds float64
    X = np.zeros((100, 3))
    model = grucy.GRURegressor(hidden_size=4, epochs=1, random_state=0)
    with pytest.raises(NumericOverflowError, match="y standardised overflowed"):
        model.fit(X, y)
    assert not hasattr(model, "y_scale_")


def test_a_series_near_the_float64_limit_forecasts_finite_or_raises():
    series = 1e308 * np.sin(np.arange(60.0))
    model = grucy.Forecaster(lookback=4, hidden_size=4, epochs=1, random_state=0)
    model.fit(series)
    assert np.isfinite(model.scale_).all()
    try:
        assert np.isfinite(model.predict(series, horizon=3)).all()
    except NumericOverflowError as exc:
        assert "scale_" in str(exc)


# -- issue 16's paths: weighted means, many series, covariates, per-step outputs -------------
def test_weighted_standardisation_near_the_float64_limit_fits():
    """main's weighted means (sample_weight, np.average) overflow as the plain ones did:
    y and X near 1e308, and weights near it too, are standardised without overflow."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5, 2))
    y = np.where(X[:, 0, 0] > 0, 1e308, -1e308)
    for w in (np.linspace(0.5, 2.0, 60), np.full(60, 1e308)):
        model = grucy.GRURegressor(hidden_size=4, epochs=1, random_state=0)
        model.fit(X * 1e307, y, sample_weight=w)
        assert np.isfinite(model.y_mean_).all() and np.isfinite(model.y_scale_).all()
        assert np.isfinite(model.x_mean_).all() and np.isfinite(model.x_scale_).all()
        assert model.y_scale_[0] == pytest.approx(1e308, rel=0.05)
    plain = grucy.GRURegressor(hidden_size=4, epochs=1, random_state=0).fit(
        X, X.sum(axis=(1, 2)), sample_weight=np.full(60, 1e308))
    ones = grucy.GRURegressor(hidden_size=4, epochs=1, random_state=0).fit(
        X, X.sum(axis=(1, 2)))
    np.testing.assert_array_equal(plain.predict(X), ones.predict(X))  # ratios only
    assert plain.score(X, X.sum(axis=(1, 2)), sample_weight=np.full(60, 1e308)) == \
        ones.score(X, X.sum(axis=(1, 2)))


def test_class_weights_whose_total_overflows_count_by_their_ratios():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4, 2))
    y = (X[:, 0, 0] > 0).astype(int)
    make = lambda cw: grucy.GRUClassifier(hidden_size=4, epochs=1, class_weight=cw,
                                          random_state=0)
    huge = make({0: 1e308, 1: 1e308}).fit(X, y)
    np.testing.assert_array_equal(huge.predict_proba(X), make(None).fit(X, y).predict_proba(X))


def test_per_step_targets_near_the_float64_limit_fit_or_raise_never_predict_inf():
    rng = np.random.default_rng(0)
    X = [rng.standard_normal((T, 2)) for T in (3, 5, 4, 6) * 4]
    y = [np.where(x[:, 0] > 0, 1e308, -1e308) for x in X]
    model = grucy.GRURegressor(hidden_size=4, epochs=1, return_sequences=True,
                               random_state=0).fit(X, y)
    assert np.isfinite(model.y_scale_).all()
    try:
        pred = model.predict(X)
    except NumericOverflowError as exc:
        assert "y_scale_" in str(exc)
    else:
        assert all(np.isfinite(p).all() for p in pred)
    model.y_scale_ = np.full_like(model.y_scale_, 1.7e308)
    model.y_mean_ = np.full_like(model.y_mean_, 1.7e308)
    with pytest.raises(NumericOverflowError, match="predictions overflowed"):
        model.predict(X)


def test_a_global_forecaster_near_the_float64_limit_and_its_covariates():
    rng = np.random.default_rng(0)
    ys = [1e308 * np.sin(np.arange(50.0)), rng.standard_normal(40)]
    Xs = [np.c_[1e308 * np.cos(np.arange(50.0))], rng.standard_normal((40, 1))]
    model = grucy.Forecaster(lookback=4, horizon=2, hidden_size=4, epochs=1,
                             random_state=0).fit(ys, Xs)
    assert model.mean_.shape == model.scale_.shape == (2, 1)
    assert np.isfinite(model.scale_).all() and np.isfinite(model.covariate_scale_).all()
    future = [np.ones((7, 1)), np.ones((7, 1))]
    try:
        out = model.predict([y[-4:] for y in ys], horizon=3, X=future)
        assert all(np.isfinite(o).all() for o in out)
    except NumericOverflowError as exc:
        assert "scale_" in str(exc)
    # a history far outside the fitted scale is named, never a misleading "x contains inf"
    with pytest.raises(NumericOverflowError, match="history standardised"):
        model.predict([np.full(4, 1e308), np.full(4, -1e308)], horizon=1,
                      X=[np.ones((5, 1))] * 2)
    small = grucy.Forecaster(lookback=4, hidden_size=4, epochs=1, random_state=0).fit(
        ys[1], Xs[1])
    with pytest.raises(NumericOverflowError, match="covariates standardised"):
        small.predict(ys[1][-4:], horizon=1, X=np.full((5, 1), 1e300))
    # a forecaster's weights near the limit: only their ratios matter
    w = np.full(40, 1e308)
    weighted = grucy.Forecaster(lookback=4, hidden_size=4, epochs=1, random_state=0).fit(
        ys[1], Xs[1], sample_weight=w)
    np.testing.assert_array_equal(weighted.predict(ys[1][-4:], X=Xs[1][-5:]),
                                  small.predict(ys[1][-4:], X=Xs[1][-5:]))


@pytest.mark.parametrize("make, data", [
    (lambda: grucy.GRURegressor(hidden_size=8, epochs=3, lr=1e39, optimizer="sgd",
                                max_grad_norm=None, return_sequences=True, random_state=0),
     "per_step"),
    (lambda: grucy.GRUClassifier(hidden_size=8, epochs=3, lr=1e39, optimizer="sgd",
                                 max_grad_norm=None, return_sequences=True,
                                 class_weight="balanced", random_state=0), "tagging"),
    (lambda: grucy.Forecaster(lookback=4, horizon=2, hidden_size=8, epochs=3, lr=1e39,
                              optimizer="sgd", max_grad_norm=None, quantiles=(0.1, 0.9),
                              random_state=0), "covariates"),
])
def test_issue16_models_report_divergence_and_stay_unfitted(make, data):
    rng = np.random.default_rng(1)
    X = [rng.standard_normal((T, 2)) for T in (3, 6, 4, 5) * 8]
    args = {"per_step": (X, [10 * x.sum(axis=1) for x in X]),
            "tagging": (X, [(x[:, 0] > 0).astype(int) for x in X]),
            "covariates": ([10 * rng.standard_normal(60).cumsum() for _ in range(2)],
                           [rng.standard_normal((60, 2)) for _ in range(2)])}[data]
    model = make()
    with pytest.raises(TrainingDivergedError, match="diverged"):
        model.fit(*args)
    assert not hasattr(model, "net_") and not hasattr(model, "history_")


def test_sequence_net_backward_overflow_is_named():
    """SequenceNet (per-step readout, last_steps): an overflow in its backward is an
    error naming the part, never NaN gradients."""
    from grucy.models.nets import SequenceNet

    net = SequenceNet(2, 4, 3, last_steps=2, dtype=np.float32, seed=0)
    out = net.forward(np.ones((2, 5, 2), np.float32))
    with pytest.raises(NumericOverflowError, match="overflowed"):
        net.backward(np.full(out.shape, 3e38, np.float32))


def test_a_backtest_scales_as_predict_does_and_never_returns_inf():
    """Forecaster.backtest (issue 16) standardises and unscales through the same checked
    steps as predict: a history outside the fitted scale is named, not passed on as a
    float32 inf ('x contains NaN or inf'), and its forecasts are finite or refused."""
    series = np.sin(np.arange(60.0))
    model = grucy.Forecaster(lookback=4, hidden_size=4, epochs=1, random_state=0)
    model.fit(series)
    result = model.backtest(series, start=40, horizon=2)
    assert np.isfinite(result["forecast"]).all()
    with pytest.raises(NumericOverflowError, match="history standardised"):
        model.backtest(series * 1e300, start=40, horizon=2)
    model.net_.parameters()[-1][...] = 1e4  # the readout's bias: forecasts of ~1e4
    model.scale_ = np.full_like(model.scale_, 1e306)
    with pytest.raises(NumericOverflowError, match="Forecaster's forecast overflowed"):
        model.backtest(series * 1e306, start=40, horizon=2)


def test_ctrl_c_in_fit_leaves_the_model_as_it_was(monkeypatch):
    # KeyboardInterrupt is no Exception: fit's all-or-nothing let it through, and the
    # model kept a half-trained network and the new data's fitted attributes.
    rng = np.random.default_rng(0)
    X3, y = rng.normal(size=(40, 6, 3)), rng.normal(size=40)
    model = grucy.GRURegressor(hidden_size=4, epochs=2, random_state=0).fit(X3, y)
    before = model.predict(X3)
    epochs = {"n": 0}
    real = Trainer._run_epoch

    def interrupted(self, *a, **k):
        epochs["n"] += 1
        if epochs["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "_run_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.set_params(epochs=3).fit(rng.normal(size=(40, 6, 5)), y)
    assert model.n_features_in_ == 3
    np.testing.assert_array_equal(model.predict(X3), before)
    fresh = grucy.GRURegressor(hidden_size=4, epochs=3, random_state=0)
    epochs["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        fresh.fit(X3, y)
    assert not hasattr(fresh, "net_")


def test_a_checkpoint_that_cannot_be_written_names_the_one_to_resume_from(tmp_path,
                                                                          monkeypatch):
    from grucy import io

    _, task = _small_task()
    real, writes = io.write_archive, {"n": 0}

    def full(*a, **k):  # the second checkpoint meets a full disk
        writes["n"] += 1
        if writes["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(io, "write_archive", full)
    trainer = Trainer(task, epochs=3, batch_size=8, seed=0,
                      checkpoint=tmp_path / "ck-{epoch}.grucy")
    # (it was a bare "[Errno 28] No space left on device")
    with pytest.raises(OSError, match=r"cannot write the checkpoint of epoch 2 \(No space "
                                      r"left on device\); the last one written, .*ck-1"
                                      r"\.grucy, is intact: resume from it") as info:
        trainer.fit()
    assert info.value.errno == 28 and info.value.filename.endswith("ck-2.grucy")


# -- data near the smallest float64: the squares underflow, the scale must not ----------
def test_data_so_small_that_its_squares_underflow_is_standardised_as_at_unit_scale():
    """y near 1e-170 (or X near 1e-300): np.std squared the deviations to 0, the scale
    became 1 as for constant data, and the model predicted ~1e167 times the data."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 6, 2))
    y = X[:, -1, 0] + 0.3 * X[:, 0, 1]
    kw = dict(hidden_size=4, epochs=3, random_state=0)
    unit = grucy.GRURegressor(**kw).fit(X, y)
    for sx, sy in ((1.0, 1e-170), (1e-300, 1.0)):
        tiny = grucy.GRURegressor(**kw).fit(X * sx, y * sy)
        np.testing.assert_allclose(tiny.y_scale_, unit.y_scale_ * sy, rtol=1e-12)
        np.testing.assert_allclose(tiny.x_scale_, unit.x_scale_ * sx, rtol=1e-12)
        np.testing.assert_allclose(tiny.predict(X * sx) / sy, unit.predict(X), rtol=1e-5,
                                   atol=1e-6)
    series = 1e-170 * np.sin(np.arange(60.0))
    f = grucy.Forecaster(lookback=4, hidden_size=4, epochs=1, random_state=0).fit(series)
    assert f.scale_ == pytest.approx(np.std(np.sin(np.arange(60.0))) * 1e-170, rel=1e-12)
    constant = grucy.GRURegressor(**kw).fit(X, np.full(60, 1e-200))
    assert constant.y_scale_[0] == 1.0  # truly constant data keeps a scale of 1


@pytest.mark.parametrize("scale", [1.0, 1e160, 1e-170])
def test_regressor_score_is_r2_at_every_scale(scale):
    """R^2 squared the raw residuals: NaN (overflow) near 1e160 and 1.0 (both sums
    underflowed to 0) near 1e-170; it does not depend on the scale."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 5, 2))
    y = np.stack([X[:, -1, 0], X[:, 0, 1] - X[:, 2, 0]], axis=1)
    model = grucy.GRURegressor(hidden_size=4, epochs=2, random_state=0).fit(X, y * scale)
    pred = model.predict(X) / scale
    w = rng.uniform(0.5, 2.0, 40)
    expect = np.mean([1 - np.average((y[:, j] - pred[:, j]) ** 2, weights=w)
                      / np.average((y[:, j] - np.average(y[:, j], weights=w)) ** 2,
                                   weights=w) for j in range(2)])
    assert model.score(X, y * scale, sample_weight=w) == pytest.approx(expect, rel=1e-9)


@pytest.mark.parametrize("cw, sw", [(1e200, 1e200), (1e-200, 1e-200), (1.0, 5e-324)])
def test_extreme_class_and_sample_weights_train_as_equal_weights_do(cw, sw):
    """Only the weights' ratios matter: 1e200 x 1e200 overflowed to inf ("weight
    contains NaN or inf"), 1e-200 x 1e-200 vanished ("no training step was taken"),
    and all-equal weights of 5e-324 trained nothing."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 4, 1))
    y = (X[:, :, 0].sum(1) > 0).astype(int)
    kw = dict(hidden_size=4, epochs=2, random_state=0)
    plain = grucy.GRUClassifier(**kw).fit(X, y)
    model = grucy.GRUClassifier(class_weight={0: cw, 1: cw}, **kw).fit(
        X, y, sample_weight=np.full(20, sw))
    np.testing.assert_allclose(model.history_["loss"], plain.history_["loss"], rtol=1e-12)


def test_validation_rmse_and_backtest_rmse_of_data_near_1e160_are_finite():
    """Squared in data units, the validation RMSE overflowed and fit raised
    TrainingDivergedError ("the validation loss is not finite ... lower the learning
    rate"); backtest's rmse came back inf."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 5, 2))
    y = X[:, -1, 0] - X[:, 0, 1]
    kw = dict(hidden_size=4, epochs=2, random_state=0, validation_fraction=0.2)
    unit = grucy.GRURegressor(**kw).fit(X, y)
    big = grucy.GRURegressor(**kw).fit(X, y * 1e160)
    np.testing.assert_allclose(np.array(big.history_["val_rmse"]) / 1e160,
                               unit.history_["val_rmse"], rtol=1e-6)
    series = np.sin(np.arange(80.0) / 3)
    fkw = dict(lookback=6, hidden_size=4, epochs=2, random_state=0, validation_fraction=0.2)
    f1 = grucy.Forecaster(**fkw).fit(series)
    fb = grucy.Forecaster(**fkw).fit(series * 1e160)
    np.testing.assert_allclose(np.array(fb.history_["val_rmse"]) / 1e160,
                               f1.history_["val_rmse"], rtol=1e-6)
    b1 = f1.backtest(series, start=60, horizon=3)
    bb = fb.backtest(series * 1e160, start=60, horizon=3)
    assert np.all(np.isfinite(bb["rmse"]))
    np.testing.assert_allclose(bb["rmse"] / 1e160, b1["rmse"], rtol=1e-6)
    err = b1["error"].reshape(len(b1["error"]), -1)
    np.testing.assert_allclose(b1["rmse"], np.sqrt(np.mean(err ** 2, axis=1)), rtol=1e-12)
