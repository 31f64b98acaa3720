"""The pieces above the GRU layer: Linear, mse_loss, Adam, clip_grad_norm, the shipped
data sets, and the models end to end: Forecaster, GRUClassifier, GRURegressor, CharLM
(learning, prediction contracts, errors, exact resume from checkpoints)."""

import numpy as np
import pytest

import grucy
from grucy.datasets import load_co2, load_sunspots
from grucy.nn import Linear, mse_loss
from grucy.optim import Adam, clip_grad_norm

from conftest import central_difference, importorskip


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


def test_load_digits_sequences():
    importorskip("sklearn")
    from sklearn.datasets import load_digits

    from grucy.datasets import load_digits_sequences

    X, y = load_digits_sequences()
    assert X.shape == (1797, 8, 8) and X.dtype == np.float64 and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    digits = load_digits()
    np.testing.assert_array_equal(X[5], digits.images[5] / 16)  # step t = image row t
    np.testing.assert_array_equal(np.bincount(y), np.bincount(digits.target))


def test_load_stdlib_text_is_deterministic_and_capped():
    from grucy.datasets import STDLIB_MODULES, load_stdlib_text

    text = load_stdlib_text(50_000)
    assert len(text) == 50_000 and text == load_stdlib_text(50_000)
    assert text.startswith(f"# ---- {STDLIB_MODULES[0]} ----\n")
    import textwrap

    with open(textwrap.__file__, encoding="utf-8") as f:
        assert text[len("# ---- textwrap ----\n"):].startswith(f.read()[:2000])
    assert load_stdlib_text(10).startswith("# ---- ")
    small = load_stdlib_text(10**6, modules=("no_such_module_x", "string"))
    assert small.startswith("# ---- string ----") and "no_such_module_x" not in small
    with pytest.raises(RuntimeError, match="no standard-library source"):
        load_stdlib_text(100, modules=("no_such_module_x",))


# -- Forecaster ---------------------------------------------------------------------------
def _sunspot_split(lookback):
    years, values = load_sunspots()
    train = values[years <= 1978]
    test_idx = np.flatnonzero(years > 1978)
    windows = np.stack([values[i - lookback:i] for i in test_idx])
    return train, windows, values[test_idx], values[test_idx - 1]


def test_forecaster_learns_sunspots():
    train, windows, actual, persistence = _sunspot_split(12)
    model = grucy.Forecaster(lookback=12, hidden_size=32, epochs=25, random_state=0)
    model.fit(train)
    losses = model.history_["loss"]
    assert len(losses) == 25 and model.n_epochs_ == 25
    assert losses[-1] < 0.5 * losses[0]
    pred = model.predict(windows)
    assert pred.shape == (30, 1)
    rmse = np.sqrt(np.mean((pred[:, 0] - actual) ** 2))
    rmse_persistence = np.sqrt(np.mean((persistence - actual) ** 2))
    assert rmse < 0.75 * rmse_persistence
    # float32 by default: a batch of one may round differently from a batch of 30
    assert model.predict(windows[0])[0] == pytest.approx(pred[0, 0], rel=1e-5)


def test_forecaster_is_reproducible_and_seed_matters():
    train, windows, _, _ = _sunspot_split(6)
    preds = [grucy.Forecaster(6, hidden_size=8, epochs=2, random_state=s).fit(train)
             .predict(windows) for s in (5, 5, 6)]
    np.testing.assert_array_equal(preds[0], preds[1])
    assert not np.array_equal(preds[0], preds[2])


def test_forecaster_multistep_is_recursive_and_multivariate():
    rng = np.random.default_rng(0)
    t = np.arange(300)
    series = np.column_stack([np.sin(t / 6), np.cos(t / 6) + 0.05 * rng.normal(size=300)])
    model = grucy.Forecaster(lookback=10, horizon=2, hidden_size=16, epochs=15,
                             dtype="float64", random_state=0).fit(series)
    assert model.n_series_ == 2 and model.mean_.shape == (2,)
    five = model.predict(series[:200], horizon=5)
    assert five.shape == (5, 2)
    np.testing.assert_allclose(model.predict(series[:200], horizon=2), five[:2], rtol=1e-12)
    # steps 3-4 are the model's own 2-step forecast after the first two predictions
    extended = np.concatenate([series[:200], five[:2]])
    np.testing.assert_allclose(model.predict(extended, horizon=2), five[2:4], rtol=1e-10)
    # a batch of histories gives the same as one at a time
    batch = model.predict(np.stack([series[:150], series[50:200]]), horizon=3)
    np.testing.assert_allclose(batch[1], model.predict(series[50:200], horizon=3),
                               rtol=1e-10)
    # it learned the oscillation: far better than repeating the last value
    truth = series[200:205]
    assert np.sqrt(np.mean((five - truth) ** 2)) < 0.5 * np.sqrt(
        np.mean((series[199] - truth) ** 2))


def test_forecaster_validation_and_early_stopping():
    train, _, _, _ = _sunspot_split(8)
    model = grucy.Forecaster(8, hidden_size=8, epochs=30, validation_fraction=0.2,
                             patience=3, lr=0.05, random_state=0).fit(train)
    hist = model.history_
    assert {"val_loss", "val_rmse"} <= set(hist)
    assert model.n_epochs_ <= 30 and model.best_epoch_ >= 1
    # the restored weights are those of the best epoch: recompute its validation RMSE
    X = np.lib.stride_tricks.sliding_window_view(train, 9)
    n_val = int(len(X) * 0.2)
    val = X[-n_val:]
    pred = model.predict(val[:, :8])[:, 0]
    rmse = np.sqrt(np.mean((pred - val[:, 8]) ** 2))
    assert rmse == pytest.approx(min(hist["val_rmse"]), rel=1e-4)


def test_forecaster_errors():
    model = grucy.Forecaster(lookback=4, hidden_size=4, epochs=1, random_state=0)
    with pytest.raises(grucy.NotFittedError, match="not fitted"):
        model.predict(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        model.fit([1.0, np.nan, 2.0, 3.0, 4.0, 5.0])
    with pytest.raises(ValueError, match="at least lookback \\+ horizon = 5"):
        model.fit(np.arange(4.0))
    with pytest.raises(ValueError, match="loss must be one of"):
        grucy.Forecaster(loss="l3").fit(np.arange(50.0))
    model.fit(np.arange(10.0))
    with pytest.raises(ValueError, match="lookback=4"):
        model.predict(np.zeros(3))
    with pytest.raises(ValueError, match=r"\(m,\) or \(N, m\)"):
        model.predict(np.zeros((2, 5, 1)))
    from grucy.baselines import sliding_windows

    X, y = sliding_windows(np.arange(6.0), 4)
    np.testing.assert_array_equal(X, [[0, 1, 2, 3], [1, 2, 3, 4]])
    np.testing.assert_array_equal(y, [4, 5])
    with pytest.raises(ValueError, match="more than lookback"):
        sliding_windows(np.arange(4.0), 4)


# -- GRUClassifier / GRURegressor --------------------------------------------------------
def _toy_sequences(n=240, T=12, seed=0):
    """Label 1 when the sequence's mean over its first half exceeds the second half's."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, 2))
    y = (X[:, :T // 2, 0].mean(1) > X[:, T // 2:, 0].mean(1)).astype(int)
    return X, y


def test_classifier_learns_and_predicts_consistently():
    X, y = _toy_sequences()
    clf = grucy.GRUClassifier(hidden_size=16, epochs=25, validation_fraction=0.2,
                              random_state=0).fit(X[:180], ["up" if v else "down" for v in y[:180]])
    assert list(clf.classes_) == ["down", "up"]
    proba = clf.predict_proba(X[180:])
    assert proba.shape == (60, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X[180:])), proba, rtol=1e-10)
    labels = clf.predict(X[180:])
    np.testing.assert_array_equal(labels, clf.classes_[proba.argmax(1)])
    acc = clf.score(X[180:], np.where(y[180:] == 1, "up", "down"))
    assert acc > 0.75  # chance is 0.5
    assert set(clf.history_) == {"loss", "lr", "val_loss", "val_accuracy"}
    assert clf.n_features_in_ == 2 and clf.n_steps_ == 12
    # other lengths work for 3-D input
    assert clf.predict(X[180:, :7]).shape == (60,)


def test_classifier_bidirectional_and_univariate_2d():
    X, y = _toy_sequences(n=200)
    clf = grucy.GRUClassifier(hidden_size=8, epochs=20, bidirectional=True,
                              random_state=1).fit(X[:150, :, 0], y[:150])
    assert clf.n_features_in_ == 12  # a 2-D X: its columns are the steps
    assert clf.score(X[150:, :, 0], y[150:]) > 0.8
    with pytest.raises(ValueError, match="X has 5 features, but GRUClassifier is expecting 12"):
        clf.predict(X[:3, :5, 0])


def test_regressor_multi_output_and_scaling():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8, 1))
    Y = np.column_stack([X[:, :, 0].sum(1) * 100 + 7, X[:, -1, 0] - 3])
    reg = grucy.GRURegressor(hidden_size=16, epochs=40, validation_fraction=0.1,
                             random_state=0).fit(X[:240], Y[:240])
    pred = reg.predict(X[240:])
    assert pred.shape == (60, 2) and pred.dtype == np.float64
    assert reg.score(X[240:], Y[240:]) > 0.9
    assert "val_rmse" in reg.history_
    np.testing.assert_allclose(reg.y_mean_, Y[:240].mean(0))
    one = grucy.GRURegressor(hidden_size=8, epochs=3, random_state=0).fit(X, Y[:, 1])
    assert one.predict(X[:4]).shape == (4,)


@pytest.mark.parametrize("loss", ["mae", "huber"])
def test_regressor_robust_losses_train(loss):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 6))
    y = X[:, -1] * 2
    reg = grucy.GRURegressor(loss=loss, hidden_size=8, epochs=30, random_state=0).fit(X, y)
    assert reg.score(X, y) > 0.8


def test_estimator_input_errors():
    clf = grucy.GRUClassifier(epochs=1)
    with pytest.raises(grucy.NotFittedError):
        clf.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="requires y"):
        clf.fit(np.zeros((4, 3)), None)
    with pytest.raises(ValueError, match="same number of samples"):
        clf.fit(np.zeros((4, 3)), [0, 1, 0])
    with pytest.raises(ValueError, match="2 classes"):
        clf.fit(np.zeros((4, 3)), [1, 1, 1, 1])
    with pytest.raises(ValueError, match="Unknown label type"):
        clf.fit(np.zeros((4, 3)), [0.5, 1.5, 0.5, 1.5])
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(np.array([[np.nan, 1.0], [1.0, 2.0]]), [0, 1])
    with pytest.raises(ValueError, match="2-D .* or 3-D"):
        clf.fit(np.zeros(4), [0, 1, 0, 1])
    with pytest.raises(TypeError, match="sparse"):
        import scipy.sparse
        clf.fit(scipy.sparse.csr_matrix(np.eye(4)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="validation_fraction"):
        grucy.GRUClassifier(validation_fraction=1.5).fit(np.zeros((4, 3)), [0, 1, 0, 1])
    with pytest.raises(TypeError, match="dtype"):
        grucy.GRURegressor(dtype="int8").fit(np.zeros((4, 3)), [0, 1, 0, 1])


def test_labels_of_mixed_types_are_refused_naming_y():
    X = np.random.default_rng(0).normal(size=(20, 5, 2))
    clf = grucy.GRUClassifier(hidden_size=4, epochs=1)
    # (np.unique's own error: "'<' not supported between instances of 'str' and 'int'")
    with pytest.raises(TypeError, match=r"y mixes labels of types \['int', 'str'\]; class "
                                        r"labels must be of one comparable"):
        clf.fit(X, np.array([1, "a"] * 10, dtype=object))
    with pytest.raises(ValueError, match=r"y contains a missing label \(None, first at "
                                         r"index \(0,\)\)"):  # (not a type of label)
        clf.fit(X, [None, 1] * 10)
    X_seq = [x for x in X]
    with pytest.raises(TypeError, match="y mixes labels"):
        grucy.GRUClassifier(return_sequences=True, epochs=1).fit(
            X_seq, [np.array([1, "a", 2, "b", 3], dtype=object)] * 20)


# -- CharLM -------------------------------------------------------------------------------
TEXT = ("the cat sat on the mat. the dog sat on the log. " * 40
        + "a cat and a dog sat on a mat and a log. " * 30)


def test_charlm_learns_beyond_a_bigram_and_generates():
    from grucy.baselines import char_bigram_bits_per_char

    train, test = TEXT[:-400], TEXT[-400:]
    lm = grucy.CharLM(hidden_size=48, embedding_dim=8, bptt=16, batch_size=8, epochs=6,
                      lr=1e-2, random_state=0).fit(train)
    assert lm.vocab_ == "".join(sorted(set(train)))
    assert "val_bits_per_char" in lm.history_
    assert lm.history_["loss"][-1] < lm.history_["loss"][0]
    bpc = lm.bits_per_char(test)
    assert bpc < char_bigram_bits_per_char(train, test)
    sample = lm.generate("the ", 40, temperature=0.5, random_state=1)
    assert len(sample) == 40 and set(sample) <= set(lm.vocab_)
    assert sample == lm.generate("the ", 40, temperature=0.5, random_state=1)
    greedy = lm.generate("the c", 3, temperature=0)
    assert greedy == "at "
    # a vanishing temperature is greedy (1e-310 overflowed z / t: NumPy's NaN error)
    for t in (1e-300, 1e-310, 5e-324):
        assert lm.generate("the c", 3, temperature=t, random_state=1) == greedy
    # unseen characters map to the unknown symbol and are still scored
    assert np.isfinite(lm.bits_per_char("the zebra"))


def test_charlm_bits_per_char_matches_the_mean_cross_entropy():
    lm = grucy.CharLM(hidden_size=8, embedding_dim=4, bptt=8, batch_size=4, epochs=1,
                      dtype="float64", random_state=0).fit(TEXT[:800])
    text = TEXT[:300]
    codes = lm.encode(text)
    lm.net_.reset_state(1)
    logits = lm.net_.forward(codes[None, :-1], None, training=False)[0]
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -np.mean(logp[np.arange(len(codes) - 1), codes[1:]]) / np.log(2)
    # chunked evaluation carries the state: the same number as one long forward
    assert lm.bits_per_char(text, chunk=7) == pytest.approx(expected, rel=1e-12)


def test_charlm_errors():
    with pytest.raises(TypeError, match="str"):
        grucy.CharLM().fit(b"bytes")
    with pytest.raises(ValueError, match="too short"):
        grucy.CharLM(batch_size=32).fit("short text")
    with pytest.raises(grucy.NotFittedError):
        grucy.CharLM().generate("a")
    lm = grucy.CharLM(hidden_size=4, embedding_dim=2, batch_size=2, epochs=1,
                      random_state=0).fit(TEXT[:200])
    with pytest.raises(ValueError, match="temperature"):
        lm.generate("a", 3, temperature=-1)


# -- what every model shares -------------------------------------------------------------
MODELS = [grucy.Forecaster, grucy.GRUClassifier, grucy.GRURegressor, grucy.CharLM]


@pytest.mark.parametrize("Model", MODELS, ids=lambda m: m.__name__)
def test_shared_options_are_declared_once(Model):
    """Every option of GRUModel is a keyword argument of every model, declared in
    GRUModel (the same field) unless the model changes its default; the command line and
    the diagnostics find what a model reads through input_kind and network_inputs."""
    import dataclasses
    import inspect

    from grucy.models import GRUModel

    shared = {f.name: f for f in dataclasses.fields(GRUModel)}
    own = Model.__dataclass_fields__
    params = inspect.signature(Model).parameters
    for name, field in shared.items():
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        if own[name] is not field:  # declared again: only to change the default
            assert own[name].type == field.type and own[name].default != field.default
    assert Model.input_kind in ("series", "sequences", "text")
    assert Model.network_inputs is not GRUModel.network_inputs


# -- every model trains through the one loop: checkpoints resume exactly -----------------
def _resume_case(kind):
    if kind == "forecaster":
        data = (np.sin(np.arange(120) / 5),)
        make = lambda: grucy.Forecaster(6, hidden_size=8, epochs=4, dropout=0.2,  # noqa: E731
                                        validation_fraction=0.2, patience=10,
                                        random_state=3)
    elif kind == "classifier":
        X, y = _toy_sequences(n=80, T=6)
        data = (X, y)
        make = lambda: grucy.GRUClassifier(hidden_size=8, epochs=4, num_layers=2,  # noqa: E731
                                           dropout=0.3, schedule="cosine",
                                           validation_fraction=0.2, random_state=3)
    elif kind == "regressor":
        X, y = _toy_sequences(n=80, T=6)
        data = (X, X.sum(axis=(1, 2)))
        make = lambda: grucy.GRURegressor(hidden_size=8, epochs=4, optimizer="sgd",  # noqa: E731
                                          lr=0.05, random_state=None)  # seed from the file
    else:
        data = (TEXT[:1500],)
        make = lambda: grucy.CharLM(hidden_size=8, embedding_dim=4, bptt=10,  # noqa: E731
                                    batch_size=4, epochs=4, dropout=0.2, random_state=3)
    return data, make


@pytest.mark.parametrize("kind", ["forecaster", "classifier", "regressor", "lm"])
def test_models_resume_from_a_checkpoint_bit_identically(tmp_path, kind):
    data, make = _resume_case(kind)
    full = make().fit(*data, checkpoint=tmp_path / "ck-{epoch}.grucy")
    resumed = make().fit(*data, resume=tmp_path / "ck-2.grucy")
    assert resumed.history_ == full.history_
    for (name, a), (_, b) in zip(full.net_.named_parameters(),
                                 resumed.net_.named_parameters()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_resume_with_other_data_is_refused(tmp_path):
    X, y = _toy_sequences(n=60, T=5)
    grucy.GRUClassifier(hidden_size=4, epochs=2, random_state=0).fit(
        X, y, checkpoint=tmp_path / "c.grucy")
    with pytest.raises(ValueError, match="other data"):
        grucy.GRUClassifier(hidden_size=4, epochs=3, random_state=0).fit(
            X[:50], y[:50], resume=tmp_path / "c.grucy")


def test_resume_with_other_training_options_is_refused(tmp_path):
    X, y = _toy_sequences(n=40, T=5)
    kw = dict(hidden_size=4, epochs=4, random_state=0)
    grucy.GRURegressor(loss="mse", **kw).fit(X, y, checkpoint=tmp_path / "r-{epoch}.grucy")
    with pytest.raises(ValueError, match=r"other options .*: loss='mse' in the "
                                         r"checkpoint, 'mae' now"):
        grucy.GRURegressor(loss="mae", **kw).fit(X, y, resume=tmp_path / "r-2.grucy")
    # (lr used to be taken from the checkpoint without a word)
    with pytest.raises(ValueError, match=r"lr=0.01 in the checkpoint, 0.5 now; "
                                         r"optimizer='adam' in the checkpoint, 'sgd' now"):
        grucy.GRURegressor(lr=0.5, optimizer="sgd", **kw).fit(
            X, y, resume=tmp_path / "r-2.grucy")
    s = np.sin(np.arange(100) / 5)
    grucy.Forecaster(8, quantiles=(0.2, 0.8), **kw).fit(
        s, checkpoint=tmp_path / "f-{epoch}.grucy")
    with pytest.raises(ValueError, match=r"quantiles=\[0.2, 0.8\] in the checkpoint, "
                                         r"\[0.1, 0.9\] now"):
        grucy.Forecaster(8, quantiles=(0.1, 0.9), **kw).fit(s, resume=tmp_path / "f-2.grucy")
    # what may change: more epochs, patience, verbose, random_state (the seed is the
    # checkpoint's), and a quantiles list equal to the tuple
    longer = grucy.Forecaster(8, quantiles=[0.2, 0.8], hidden_size=4, epochs=6,
                              patience=3, random_state=5).fit(s, resume=tmp_path / "f-2.grucy")
    assert longer.n_epochs_ == 6 and len(longer.history_["loss"]) == 6


# -- save / load --------------------------------------------------------------------------
def _fitted_models():
    X, y = _toy_sequences(n=60, T=5)
    labels = np.array(["b", "a", "c"])[np.arange(60) % 3]
    return {
        "forecaster": (grucy.Forecaster(5, horizon=2, hidden_size=6, epochs=2,
                                        validation_fraction=0.2, random_state=0)
                       .fit(np.column_stack([np.sin(np.arange(80.0)), np.arange(80.0)])),
                       lambda m: m.predict(np.column_stack([np.sin(np.arange(9.0)),
                                                            np.arange(9.0)]), horizon=5)),
        "classifier": (grucy.GRUClassifier(hidden_size=6, epochs=2, bidirectional=True,
                                           dtype=np.float64, random_state=0).fit(X, labels),
                       lambda m: m.predict_proba(X)),
        "regressor": (grucy.GRURegressor(hidden_size=6, epochs=2, num_layers=2,
                                         random_state=0).fit(X[:, :, 0], y * 3.0),
                      lambda m: m.predict(X[:, :, 0])),
        "lm": (grucy.CharLM(hidden_size=6, embedding_dim=3, batch_size=3, bptt=7, epochs=1,
                            random_state=np.random.default_rng(0)).fit(TEXT[:400]),
               lambda m: m.bits_per_char(TEXT[400:700] + "\u00e9")),
    }


@pytest.mark.parametrize("kind", ["forecaster", "classifier", "regressor", "lm"])
def test_models_save_and_load_exactly(tmp_path, kind):
    model, use = _fitted_models()[kind]
    path = tmp_path / f"{kind}.grucy"
    grucy.save(model, path)
    loaded = grucy.load(path)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(use(loaded), use(model))
    for name in model._fitted_names():
        a, b = getattr(model, name), getattr(loaded, name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=name)
            assert a.dtype == b.dtype, name
        else:
            assert a == b, name
    for (k, a), (_, b) in zip(model.net_.named_parameters(), loaded.net_.named_parameters()):
        np.testing.assert_array_equal(a, b, err_msg=k)
        assert a.dtype == b.dtype
    params = model.get_params()
    if kind == "lm":  # a Generator cannot be saved: random_state comes back as None
        assert loaded.random_state is None
        params["random_state"] = None
    params["dtype"] = np.dtype(params["dtype"]).name  # a dtype given as a type is saved by name
    assert loaded.get_params() == params


def test_unfitted_model_round_trip_and_refit(tmp_path):
    grucy.save(grucy.GRURegressor(hidden_size=5, dtype=np.float64), tmp_path / "u.grucy")
    loaded = grucy.load(tmp_path / "u.grucy")
    assert loaded.hidden_size == 5 and loaded.dtype == "float64"
    with pytest.raises(grucy.NotFittedError):
        loaded.predict(np.zeros((2, 3)))
    X = np.random.default_rng(0).normal(size=(20, 4))
    assert loaded.set_params(epochs=1).fit(X, X.sum(1)).predict(X).shape == (20,)


def test_corrupt_model_file_is_refused(tmp_path):
    model, _ = _fitted_models()["forecaster"]
    path = tmp_path / "f.grucy"
    grucy.save(model, path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-5])
    with pytest.raises(grucy.FileFormatError, match="checksum"):
        grucy.load(path)
    # a file whose arrays do not fit the configuration is refused, not half-built
    from grucy import io

    grucy.save(model, path)
    kind, config, arrays = io.read_archive(path)
    arrays["net/gru.weight_hh_l0"] = arrays["net/gru.weight_hh_l0"][:3]
    io.write_archive(path, kind, config, arrays)
    with pytest.raises(grucy.FileFormatError, match="cannot rebuild"):
        grucy.load(path)


# -- diagnostics.gradient_flow --------------------------------------------------------------
def _fd_state_gradient(loss_of_state, state, eps=1e-6):
    state = state.copy()
    return central_difference(lambda: loss_of_state(state), state, eps)


def test_gradient_flow_matches_finite_differences_forecaster():
    from grucy.diagnostics import gradient_flow
    from grucy.losses import mse_loss as mse

    series = np.sin(np.arange(60) / 3) + np.arange(60) / 30
    model = grucy.Forecaster(4, horizon=2, hidden_size=3, num_layers=2, epochs=3,
                             dtype="float64", random_state=0).fit(series)
    history, target = series[:9], series[9:11]
    flow = gradient_flow(model, history, target)
    assert flow.shape == (9,)
    net, T = model.net_, 9
    X, _ = model.network_inputs(history)
    scaled_target = ((target - model.mean_) / model.scale_).reshape(1, 2)

    def loss_of_state(t):
        def f(state):
            h_n = state if t == T else model.net_.gru.forward(X[:, t:], h0=state,
                                                               training=False)[1]
            out = net.head.forward(h_n[-1], training=False)
            return mse(out, scaled_target)[0]
        return f

    h = None
    for t in range(1, T + 1):
        _, h = net.gru.forward(X[:, t - 1:t], h0=h, training=False)
        numeric = _fd_state_gradient(loss_of_state(t), h)
        assert flow[t - 1] == pytest.approx(np.linalg.norm(numeric), rel=1e-6), t
    # without y: the gradient of the prediction itself (sum of outputs)
    plain = gradient_flow(model, history)
    assert plain.shape == (9,) and not np.allclose(plain, flow)


def test_gradient_flow_charlm_and_float32_models():
    from grucy.diagnostics import gradient_flow
    from grucy.losses import cross_entropy_loss

    lm = grucy.CharLM(hidden_size=5, embedding_dim=3, bptt=8, batch_size=2, epochs=1,
                      dtype="float64", random_state=0).fit(TEXT[:300])
    text = "the cat sat"
    flow = gradient_flow(lm, text)
    codes = lm.encode(text)
    T = len(codes) - 1
    assert flow.shape == (T,) and flow[-1] == 0.0
    net = lm.net_
    emb = net.embedding.forward(codes[None, :-1], training=False)

    def loss_of_state(t):  # only the readouts of steps t+1..T depend on the state after t
        def f(state):
            y, _ = net.gru.forward(emb[:, t:], h0=state, training=False)
            logits = net.head.forward(y, training=False)
            return cross_entropy_loss(logits, codes[None, t + 1:], normalizer=T)[0]
        return f

    h = None
    for t in range(1, T):
        _, h = net.gru.forward(emb[:, t - 1:t], h0=h, training=False)
        numeric = _fd_state_gradient(loss_of_state(t), h)
        assert flow[t - 1] == pytest.approx(np.linalg.norm(numeric), rel=1e-6), t
    # a float32 model is analysed in a float64 copy: the same numbers to float32 accuracy
    X, y = _toy_sequences(n=30, T=6)
    clf32 = grucy.GRUClassifier(hidden_size=4, epochs=2, random_state=0).fit(X, y)
    clf64 = grucy.GRUClassifier(hidden_size=4, epochs=2, dtype="float64",
                                random_state=0)
    clf64.fit(X, y)
    clf64.net_.load_state_dict(clf32.net_.state_dict())
    np.testing.assert_allclose(gradient_flow(clf32, X[:3], y[:3]),
                               gradient_flow(clf64, X[:3], y[:3]), rtol=1e-12)
    with pytest.raises(ValueError, match="unidirectional"):
        gradient_flow(grucy.GRURegressor(hidden_size=2, epochs=1, bidirectional=True)
                      .fit(X, y * 1.0), X)
    with pytest.raises(TypeError, match="Forecaster"):
        gradient_flow(object(), X)


# -- typed public API ---------------------------------------------------------------------
def test_package_is_typed_and_annotations_resolve():
    import typing
    from importlib import resources

    from grucy import baselines, datasets, diagnostics, losses, nn, optim, training

    assert resources.files("grucy").joinpath("py.typed").is_file()
    public = [grucy.Forecaster.fit, grucy.Forecaster.predict, grucy.GRUClassifier.fit,
              grucy.GRUClassifier.predict_proba, grucy.GRURegressor.score,
              grucy.CharLM.generate, grucy.CharLM.bits_per_char, losses.mse_loss,
              losses.cross_entropy_loss, nn.Embedding.forward, nn.TruncatedBPTT.forward,
              optim.make_optimizer, optim.clip_grad_norm, optim.ReduceLROnPlateau.step,
              training.Trainer.fit, training.read_checkpoint, diagnostics.gradient_flow,
              datasets.load_stdlib_text, baselines.fit_ar]
    for fn in public:
        hints = typing.get_type_hints(fn)
        assert "return" in hints, fn.__qualname__
        assert fn.__doc__ and len(fn.__doc__) > 40, fn.__qualname__


def test_charlm_generate_on_a_stream_gives_the_text_of_a_forward_per_character():
    """generate steps a GRUStream from the prompt's state (a forward per character
    checked and packed the weights every time: 5.8x slower at 256 units); the text is
    that of the forward per character, bit for bit."""
    lm = grucy.CharLM(hidden_size=16, num_layers=2, embedding_dim=8, epochs=1, bptt=16,
                      random_state=0).fit(TEXT)
    net, V = lm.net_, len(lm.vocab_)
    for temperature, seed in ((0.0, None), (0.8, 3)):
        rng = np.random.default_rng(seed)
        net.reset_state(1)
        logits = net.forward(lm.encode("the ")[None], None, training=False)[0, -1]
        want = []
        for _ in range(40):
            z = logits[:V].astype(np.float64)
            if temperature == 0:
                c = int(np.argmax(z))
            else:
                p = np.exp((z - z.max()) / temperature)
                c = int(rng.choice(V, p=p / p.sum()))
            want.append(lm.vocab_[c])
            logits = net.forward(np.array([[c]]), None, training=False)[0, -1]
        got = lm.generate("the ", 40, temperature=temperature, random_state=seed)
        assert got == "".join(want)
