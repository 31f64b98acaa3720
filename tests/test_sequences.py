"""Sequences as users hand them over (issue 16, deliverables 1-3): variable lengths (a list
of arrays, or a padded array with lengths=), an output per step (return_sequences),
sample_weight and class_weight; padding never influences a result."""

import numpy as np
import pytest

import grucy
from grucy.training import Packed, SequenceTask


def _ragged(n=240, seed=0, F=2, lo=2, hi=16):
    """Sequences of random lengths; label = sign of the last valid step's first feature
    (a model that read the padding as data would see a 0 there instead)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, size=n)
    X = [rng.normal(size=(T, F)) for T in lengths]
    y = np.array([int(x[-1, 0] > 0) for x in X])
    return X, y, lengths


def _pad(X, fill, T=None):
    T = T or max(len(x) for x in X)
    out = np.full((len(X), T) + X[0].shape[1:], fill, dtype=np.float64)
    for i, x in enumerate(X):
        out[i, :len(x)] = x
    return out


# -- deliverable 1: variable lengths ---------------------------------------------------
def test_a_list_of_unequal_sequences_is_the_supported_input():
    # the issue's own example: NumPy's "inhomogeneous shape" error never shows
    clf = grucy.GRUClassifier(epochs=2, hidden_size=4, random_state=0)
    clf.fit([np.ones((5, 2)), np.ones((9, 2)), -np.ones((3, 2))], [0, 1, 0])
    assert clf.predict([np.ones((4, 2))]).shape == (1,)
    assert clf.n_features_in_ == 2 and clf.n_steps_ == 9


def test_variable_lengths_known_answer_reads_each_sequence_to_its_end():
    X, y, _ = _ragged()
    clf = grucy.GRUClassifier(hidden_size=16, epochs=40, random_state=0).fit(X[:180], y[:180])
    assert clf.score(X[180:], y[180:]) >= 0.95  # chance 0.5; the last step decides


@pytest.mark.parametrize("Model", [grucy.GRUClassifier, grucy.GRURegressor])
def test_padding_never_influences_fit_or_predictions(Model):
    X, y, lengths = _ragged(n=120, seed=1)
    y = y if Model is grucy.GRUClassifier else np.array([x[-1, 0] for x in X])
    make = lambda: Model(hidden_size=8, epochs=5, bidirectional=True,  # noqa: E731
                         validation_fraction=0.2, random_state=0)
    as_list = make().fit(X, y)
    rng = np.random.default_rng(5)
    garbage = _pad(X, 0.0, T=20)
    garbage[np.arange(20)[None, :] >= lengths[:, None]] = rng.normal(
        size=(int(np.sum(20 - lengths)), 2)) * 1e3  # padding: huge random numbers
    padded_nan = make().fit(_pad(X, np.nan), y, lengths=lengths)
    padded_garbage = make().fit(garbage, y, lengths=lengths)
    out = "predict_proba" if Model is grucy.GRUClassifier else "predict"
    ref = getattr(as_list, out)(X)
    for model in (padded_nan, padded_garbage):
        np.testing.assert_array_equal(getattr(model, out)(X), ref)
        np.testing.assert_array_equal(getattr(model, out)(garbage, lengths=lengths), ref)
    assert as_list.history_ == padded_nan.history_ == padded_garbage.history_
    # a sequence's result does not depend on its neighbours or its position (the GRU is
    # bit-identical; the readout's GEMM may round a batch of one differently)
    alone = np.concatenate([getattr(as_list, out)([X[i]]) for i in (7, 3, 50)])
    np.testing.assert_allclose(alone, ref[[7, 3, 50]], rtol=1e-6, atol=1e-7)
    reordered = getattr(as_list, out)([X[i] for i in range(119, -1, -1)])
    np.testing.assert_allclose(reordered[::-1], ref, rtol=1e-6, atol=1e-7)
    assert as_list.score(X, y) == padded_nan.score(garbage, y, lengths=lengths)


def test_equal_lengths_via_a_list_or_lengths_match_the_plain_array():
    X, y, _ = _ragged(n=60, seed=2, lo=6, hi=6)
    A = np.stack(X)
    ref = grucy.GRUClassifier(hidden_size=6, epochs=3, random_state=0).fit(A, y)
    via_lengths = grucy.GRUClassifier(hidden_size=6, epochs=3, random_state=0).fit(
        A, y, lengths=np.full(60, 6))
    np.testing.assert_allclose(via_lengths.predict_proba(A), ref.predict_proba(A),
                               rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ref.predict_proba(list(A)), ref.predict_proba(A))


def test_univariate_lists_and_2d_padded_arrays():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 9, size=80)
    X = [rng.normal(size=T) for T in lengths]  # (T_i,): one feature per step
    y = np.array([x.sum() for x in X])
    reg = grucy.GRURegressor(hidden_size=8, epochs=3, random_state=0).fit(X, y)
    assert reg.n_features_in_ == 1
    np.testing.assert_array_equal(reg.predict(_pad([x[:, None] for x in X], -7)[:, :, 0],
                                              lengths=lengths), reg.predict(X))


def test_variable_length_input_errors():
    clf = grucy.GRUClassifier(epochs=1, hidden_size=4)
    X = np.zeros((3, 5, 2))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 5\]"):
        clf.fit(X, [0, 1, 0], lengths=[1, 6, 2])
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 5\]"):
        clf.fit(X, [0, 1, 0], lengths=[0, 5, 2])
    with pytest.raises(ValueError, match=r"lengths must have one entry per sequence, "
                                         r"shape \(3,\)"):
        clf.fit(X, [0, 1, 0], lengths=[1, 2])
    with pytest.raises(TypeError, match="lengths must hold integers"):
        clf.fit(X, [0, 1, 0], lengths=[1.5, 2, 2])
    with pytest.raises(ValueError, match="list of sequences of different lengths carries "
                                         "its own lengths"):
        clf.fit([np.ones((2, 2)), np.ones((3, 2))], [0, 1], lengths=[2, 3])
    with pytest.raises(ValueError, match=r"X\[1\] is empty"):
        clf.fit([np.ones((2, 2)), np.ones((0, 2))], [0, 1])
    with pytest.raises(ValueError, match="same number of features per step"):
        clf.fit([np.ones((2, 2)), np.ones((3, 1))], [0, 1])
    with pytest.raises(ValueError, match="all \\(n_steps_i,\\) or all"):
        clf.fit([np.ones(2), np.ones((3, 1))], [0, 1])
    with pytest.raises(ValueError, match=r"NaN or inf within sequence 1 \(step 2\)"):
        clf.fit([np.ones((2, 2)), np.array([[1, 1], [1, 1], [np.nan, 1]])], [0, 1])
    bad = np.ones((2, 4, 2))
    bad[1, 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"within sequence 1 \(step 1\)"):
        clf.fit(bad, [0, 1], lengths=[4, 3])
    with pytest.raises(TypeError, match=r"X\[0\] must hold real numbers"):
        clf.fit([np.array([["a"]]), np.ones((2, 1))], [0, 1])
    clf.fit([np.ones((2, 2)), -np.ones((3, 2))], [0, 1])
    with pytest.raises(ValueError, match="X has 3 features per step, but GRUClassifier is "
                                         "expecting 2"):
        clf.predict([np.ones((2, 3))])


# -- deliverable 2: an output per step -----------------------------------------------------
def _tagging(n=200, seed=0):
    """Per step: is the running sum positive (depends on every step so far)?"""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 15, size=n)
    X = [rng.normal(size=(T, 1)) for T in lengths]
    return X, [(np.cumsum(x[:, 0]) > 0).astype(int) for x in X], lengths


def test_sequence_tagging_known_answer_and_structures():
    X, tags, lengths = _tagging()
    tagger = grucy.GRUClassifier(hidden_size=16, epochs=40, return_sequences=True,
                                 validation_fraction=0.1, random_state=0)
    tagger.fit(X[:150], tags[:150])
    assert tagger.score(X[150:], tags[150:]) >= 0.95
    assert {"val_accuracy", "val_loss"} <= set(tagger.history_)
    # a list in, a list out: one label per step
    pred = tagger.predict(X[150:])
    assert [p.shape for p in pred] == [(len(x),) for x in X[150:]]
    proba = tagger.predict_proba(X[150:152])
    assert [p.shape for p in proba] == [(len(x), 2) for x in X[150:152]]
    # padded in, padded out: past each end -1 (labels) and NaN (probabilities)
    P = _pad(X[150:], 0.0)
    padded = tagger.predict(P, lengths=lengths[150:])
    assert padded.shape == P.shape[:2]
    for i, p in enumerate(pred):
        np.testing.assert_array_equal(padded[i, :len(p)], p)
        assert np.all(padded[i, len(p):] == -1)
    pp = tagger.predict_proba(P, lengths=lengths[150:])
    assert pp.shape == P.shape[:2] + (2,) and np.isnan(pp[0, lengths[150]:]).all()
    # targets padded like X (their padding is never read either)
    T = _pad([t[:, None] for t in tags], -99)[:, :, 0].astype(int)
    same = grucy.GRUClassifier(hidden_size=16, epochs=40, return_sequences=True,
                               validation_fraction=0.1, random_state=0)
    same.fit(_pad(X[:150], np.nan), T[:150], lengths=lengths[:150])
    np.testing.assert_array_equal(same.predict_proba(P, lengths=lengths[150:]), pp)
    assert list(same.classes_) == [0, 1]  # -99 (padding) is no class


def test_per_step_regression_and_string_tags():
    X, _, lengths = _tagging(n=160, seed=1)
    Y = [np.column_stack([np.cumsum(x[:, 0]), x[:, 0] * 2]) for x in X]
    reg = grucy.GRURegressor(hidden_size=16, epochs=40, return_sequences=True,
                             random_state=0).fit(X[:120], Y[:120])
    assert reg.score(X[120:], Y[120:]) > 0.95
    pred = reg.predict(X[120:])
    assert [p.shape for p in pred] == [(len(x), 2) for x in X[120:]]
    padded = reg.predict(_pad(X[120:], 0.0), lengths=lengths[120:])
    assert padded.shape == (40, lengths[120:].max(), 2)
    assert np.isnan(padded[np.arange(padded.shape[1])[None] >= lengths[120:, None]]).all()
    # one target per step: (T_i,) arrays in, (T_i,) out; an (n, T) array without lengths
    A = np.stack([np.resize(x[:, 0], 6) for x in X])
    one = grucy.GRURegressor(hidden_size=8, epochs=5, return_sequences=True,
                             random_state=0).fit(A, np.cumsum(A, axis=1))
    assert one.predict(A).shape == (160, 6)
    tags = [np.where(np.cumsum(x[:, 0]) > 0, "pos", "neg") for x in X]
    tagger = grucy.GRUClassifier(hidden_size=8, epochs=3, return_sequences=True,
                                 random_state=0).fit(X, tags)
    padded = tagger.predict(_pad(X[:3], 0.0), lengths=lengths[:3])
    assert padded.dtype.kind == "U" and padded[0, lengths[0]:].tolist() == \
        [""] * (padded.shape[1] - lengths[0])


def test_per_step_loss_is_summed_over_valid_steps_only():
    """The training loss of a per-step model is the mean over the valid steps of the
    per-step losses: recomputed by hand from the network's outputs."""
    X, tags, lengths = _tagging(n=12, seed=3)
    model = grucy.GRUClassifier(hidden_size=4, epochs=1, return_sequences=True,
                                dtype="float64", random_state=0).fit(X, tags)
    proba = model.predict_proba(X)
    nll = -np.concatenate([np.log(p[np.arange(len(t)), t]) for p, t in zip(proba, tags)])
    scaled = [(x - model.x_mean_) / model.x_scale_ for x in X]
    task = SequenceTask(model.net_, Packed.from_list(scaled),
                        Packed.from_list([np.asarray(t) for t in tags]),
                        grucy.losses.cross_entropy_loss, np.arange(12), np.arange(12))
    assert task.metrics(task.evaluate(np.arange(12), None))["loss"] == pytest.approx(
        nll.mean(), rel=1e-10)
    assert task.count(np.arange(12), None) == lengths.sum()


def test_per_step_target_errors():
    X, tags, _ = _tagging(n=6)
    tagger = grucy.GRUClassifier(epochs=1, hidden_size=4, return_sequences=True)
    with pytest.raises(ValueError, match=r"y\[2\] has .* steps, but sequence 2 of X has"):
        tagger.fit(X, tags[:2] + [tags[2][:-1]] + tags[3:])
    with pytest.raises(ValueError, match="one target sequence per sequence of X"):
        tagger.fit(X, tags[:5])
    with pytest.raises(ValueError, match="requires y"):
        tagger.fit(X, None)
    with pytest.raises(ValueError, match="return_sequences=True"):
        grucy.GRUClassifier(epochs=1).fit(np.zeros((4, 3)), np.zeros((4, 3)))
    with pytest.raises(TypeError, match="return_sequences must be True or False"):
        grucy.GRUClassifier(epochs=1, return_sequences="yes").fit(X, tags)


# -- deliverable 3: weights ---------------------------------------------------------------
@pytest.mark.parametrize("Model", [grucy.GRUClassifier, grucy.GRURegressor])
def test_zero_weight_is_removal_and_integer_weight_is_repetition(Model):
    X, y, _ = _ragged(n=30, seed=4)
    y = y if Model is grucy.GRUClassifier else np.array([x[-1, 0] for x in X])
    w = np.random.default_rng(0).integers(0, 3, size=30)
    keep = np.flatnonzero(w)
    make = lambda: Model(hidden_size=6, epochs=8, dtype="float64",  # noqa: E731
                         random_state=0)
    out = "predict_proba" if Model is grucy.GRUClassifier else "predict"
    dropped = make().fit([X[i] for i in keep], y[keep])
    zero = make().fit(X, y, sample_weight=(w > 0).astype(float))
    np.testing.assert_array_equal(getattr(zero, out)(X), getattr(dropped, out)(X))
    repeated = make().fit([X[i] for i in keep.repeat(w[keep])], y[keep.repeat(w[keep])],
                          )
    weighted = make().fit(X, y, sample_weight=w)
    assert w.sum() <= 32  # one mini-batch each: the same gradient steps, up to rounding
    np.testing.assert_allclose(getattr(weighted, out)(X), getattr(repeated, out)(X),
                               rtol=1e-6, atol=1e-8)


def test_class_weight_balanced_lifts_the_minority_class():
    rng = np.random.default_rng(0)
    n = 400
    X = rng.normal(size=(n, 6, 1))
    score = X[:, :, 0].mean(1) + 0.6 * rng.normal(size=n)
    y = (score > 0.6).astype(int)  # ~15% positives, overlapping classes
    assert 0.05 < y.mean() < 0.2, y.mean()
    plain = grucy.GRUClassifier(hidden_size=8, epochs=25, random_state=0).fit(X, y)
    balanced = grucy.GRUClassifier(hidden_size=8, epochs=25, class_weight="balanced",
                                   random_state=0).fit(X, y)
    recall = lambda m: np.mean(m.predict(X)[y == 1] == 1)  # noqa: E731
    assert recall(balanced) > recall(plain) + 0.2
    counts = np.bincount(y)
    np.testing.assert_allclose(balanced.class_weight_, n / (2 * counts))
    np.testing.assert_array_equal(plain.class_weight_, [1.0, 1.0])
    # the same as the dict of those weights
    as_dict = grucy.GRUClassifier(hidden_size=8, epochs=25, random_state=0,
                                  class_weight=dict(enumerate(n / (2 * counts)))).fit(X, y)
    np.testing.assert_array_equal(as_dict.predict_proba(X), balanced.predict_proba(X))


def test_class_weight_per_step_and_errors():
    X, tags, _ = _tagging(n=40)
    tagger = grucy.GRUClassifier(hidden_size=4, epochs=1, return_sequences=True,
                                 class_weight={1: 3.0}, random_state=0).fit(X, tags)
    np.testing.assert_array_equal(tagger.class_weight_, [1.0, 3.0])
    Xa, ya = np.zeros((4, 3)), [0, 1, 0, 1]
    for cw, exc, match in [("auto", ValueError, "class_weight must be None, 'balanced'"),
                           ([1, 2], TypeError, "class_weight must be None"),
                           ({2: 1.0}, ValueError, r"labels that are not among the classes "
                                                  r"of y \[0, 1\]: \[2\]"),
                           ({1: -1.0}, ValueError, r"class_weight\[1\] must be a finite")]:
        with pytest.raises(exc, match=match):
            grucy.GRUClassifier(epochs=1, class_weight=cw).fit(Xa, ya)


def test_sample_weight_errors_and_weighted_scores():
    X, y, _ = _ragged(n=20, seed=6)
    clf = grucy.GRUClassifier(hidden_size=4, epochs=2, random_state=0)
    for w, match in [(np.ones(19), r"sample_weight must have shape \(n_samples,\) = "
                                   r"\(20,\)"),
                     (-np.ones(20), "sample_weight must be >= 0"),
                     (np.zeros(20), "sample_weight is zero everywhere"),
                     (np.r_[np.nan, np.ones(19)], "sample_weight contains NaN")]:
        with pytest.raises(ValueError, match=match):
            clf.fit(X, y, sample_weight=w)
    with pytest.raises(TypeError, match="sample_weight must be an array of real numbers"):
        clf.fit(X, y, sample_weight=["a"] * 20)
    w = np.zeros(20)
    w[np.flatnonzero(y == 1)[:3]] = 1
    with pytest.raises(ValueError, match="at least 2 classes"):
        clf.fit(X, y, sample_weight=w)  # the weighted samples hold one class
    clf.fit(X, y)
    pred = clf.predict(X)
    w = np.arange(20.0)
    assert clf.score(X, y, sample_weight=w) == pytest.approx(np.average(pred == y,
                                                                        weights=w))
    reg = grucy.GRURegressor(hidden_size=4, epochs=2, random_state=0).fit(X, y * 1.0)
    r2_w = reg.score(X, y * 1.0, sample_weight=w)
    p = reg.predict(X)
    mean = np.average(y, weights=w)
    assert r2_w == pytest.approx(1 - np.average((y - p) ** 2, weights=w)
                                 / np.average((y - mean) ** 2, weights=w))


def test_per_step_sample_weights():
    X, tags, lengths = _tagging(n=30, seed=2)
    step_w = [np.linspace(0, 1, len(x)) for x in X]  # later steps count more
    tagger = grucy.GRUClassifier(hidden_size=4, epochs=2, return_sequences=True,
                                 random_state=0).fit(X, tags, sample_weight=step_w)
    pred = tagger.predict(X)
    hits = np.concatenate([p == t for p, t in zip(pred, tags)])
    assert tagger.score(X, tags, sample_weight=step_w) == pytest.approx(
        np.average(hits, weights=np.concatenate(step_w)))
    with pytest.raises(ValueError, match=r"sample_weight\[0\] has"):
        tagger.fit(X, tags, sample_weight=[w[:-1] for w in step_w])


# -- saving ----------------------------------------------------------------------------------
def test_per_step_and_weighted_models_save_and_load(tmp_path):
    X, tags, lengths = _tagging(n=40)
    models = [
        grucy.GRUClassifier(hidden_size=5, epochs=2, return_sequences=True,
                            bidirectional=True, class_weight="balanced",
                            random_state=0).fit(X, tags),
        grucy.GRURegressor(hidden_size=5, epochs=2, return_sequences=True,
                           random_state=0).fit(X, [np.cumsum(x) for x in X]),
        grucy.GRUClassifier(hidden_size=5, epochs=2, random_state=0).fit(
            X, [t[-1] for t in tags], sample_weight=np.arange(40) % 3),
    ]
    P = _pad(X, np.nan)
    for i, model in enumerate(models):
        grucy.save(model, tmp_path / f"m{i}.grucy")
        loaded = grucy.load(tmp_path / f"m{i}.grucy")
        assert type(loaded.net_) is type(model.net_)
        np.testing.assert_array_equal(loaded.predict(P, lengths=lengths),
                                      model.predict(P, lengths=lengths))
        assert loaded.get_params() == model.get_params()


def test_variable_length_training_resumes_bit_identically(tmp_path):
    X, tags, _ = _tagging(n=50, seed=7)
    make = lambda: grucy.GRUClassifier(hidden_size=6, epochs=4, dropout=0.2,  # noqa: E731
                                       return_sequences=True, validation_fraction=0.2,
                                       random_state=3)
    w = np.arange(50) % 4
    full = make().fit(X, tags, sample_weight=w, checkpoint=tmp_path / "c-{epoch}.grucy")
    resumed = make().fit(X, tags, sample_weight=w, resume=tmp_path / "c-2.grucy")
    assert resumed.history_ == full.history_
    for (name, a), (_, b) in zip(full.net_.named_parameters(),
                                 resumed.net_.named_parameters()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    with pytest.raises(ValueError, match="other data"):
        make().fit(X, tags, sample_weight=w + 1, resume=tmp_path / "c-2.grucy")


@pytest.mark.parametrize("last_steps,lengths", [(None, [5, 2, 4]), (2, None)])
def test_sequence_net_gradients_match_finite_differences(last_steps, lengths):
    from conftest import assert_gradients_match_fd
    from grucy.models import SequenceNet

    rng = np.random.default_rng(0)
    net = SequenceNet(3, 4, 2, num_layers=2, bidirectional=last_steps is None,
                      last_steps=last_steps, dtype="float64", seed=1)
    x = rng.normal(size=(3, 5, 3))
    lengths = None if lengths is None else np.array(lengths)
    out = net.forward(x, lengths=lengths)
    W = rng.normal(size=out.shape)
    if lengths is not None:  # the loss reads the valid steps only
        W *= (np.arange(5)[None, :] < lengths[:, None])[..., None]
    net.zero_grad()
    net.backward(W)

    def f():
        return float(np.sum(net.forward(x, lengths=lengths, training=False) * W))

    grads = {k: g.copy() for k, g in net.grads.items()}
    assert_gradients_match_fd(f, {k: (p, grads[k]) for k, p in net.named_parameters()},
                              rtol=1e-6, atol=1e-9)


def test_gradient_flow_reaches_per_step_and_variable_length_models():
    from grucy.diagnostics import gradient_flow

    X, tags, _ = _tagging(n=40)
    tagger = grucy.GRUClassifier(hidden_size=4, epochs=2, return_sequences=True,
                                 random_state=0).fit(X, tags)
    x = np.random.default_rng(0).normal(size=(3, 9, 1))
    flow = gradient_flow(tagger, x, (x[:, :, 0] > 0).astype(int))
    assert flow.shape == (9,) and np.all(np.isfinite(flow)) and flow[0] > 0
    assert flow[-1] == 0  # nothing reads the state after the last step
    with pytest.raises(ValueError, match="sequences of one length"):
        tagger.network_inputs([np.ones((3, 1)), np.ones((4, 1))])


def test_zero_weights_on_a_plain_array_equal_leaving_the_rows_out():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(40, 7, 2))
    y = (X[:, -1, 0] > 0).astype(int)
    w = (np.arange(40) % 3 != 0).astype(float)
    make = lambda: grucy.GRUClassifier(hidden_size=5, epochs=4, random_state=0)  # noqa: E731
    np.testing.assert_array_equal(make().fit(X, y, sample_weight=w).predict_proba(X),
                                  make().fit(X[w > 0], y[w > 0]).predict_proba(X))


# -- a list is a list of sequences, whatever their lengths --------------------------------
def test_a_list_of_equal_length_sequences_stays_a_list():
    rng = np.random.default_rng(0)
    X_var = [rng.normal(size=(T, 1)) for T in (3, 5, 4)]
    X_eq = [rng.normal(size=(4, 1)) for _ in range(3)]
    reg = grucy.GRURegressor(return_sequences=True, hidden_size=4, epochs=2,
                             random_state=0).fit(X_var, [np.cumsum(x) for x in X_var])
    out = reg.predict(X_eq)  # (was an (3, 4) array)
    assert isinstance(out, list) and [o.shape for o in out] == [(4,)] * 3
    np.testing.assert_array_equal(np.stack(out), reg.predict(np.stack(X_eq)))
    assert isinstance(reg.predict(X_eq[:1]), list)
    clf = grucy.GRUClassifier(return_sequences=True, hidden_size=4, epochs=2,
                              random_state=0)
    clf.fit(X_var, [(x[:, 0] > 0).astype(int) for x in X_var])
    assert isinstance(clf.predict(X_eq), list) and isinstance(clf.predict_proba(X_eq), list)
    # a model fitted on a list of equal-length (T,) sequences predicts on any lengths
    # (it used to record 10 "features" and refuse a list of one sequence of 5 steps)
    X = [rng.normal(size=10) for _ in range(20)]
    reg = grucy.GRURegressor(hidden_size=4, epochs=2, random_state=0).fit(
        X, rng.normal(size=20))
    assert reg.n_features_in_ == 1
    short = [rng.normal(size=5)]
    np.testing.assert_array_equal(reg.predict(short),
                                  reg.predict(short[0][None], lengths=[5]))
    # nested lists of numbers are the array they spell (scikit-learn's X.tolist())
    A = rng.normal(size=(20, 6))
    fixed = grucy.GRURegressor(hidden_size=4, epochs=2, random_state=0).fit(
        A.tolist(), rng.normal(size=20))
    assert fixed.n_features_in_ == 6


def test_padding_of_string_labels_is_never_a_class():
    X, _, lengths = _tagging(n=20, seed=2)
    tags = [np.where(x[:, 0] > 0, "pos", "") for x in X]  # "" is a class
    tagger = grucy.GRUClassifier(return_sequences=True, hidden_size=4, epochs=2,
                                 random_state=0).fit(X, tags)
    assert tagger.classes_.tolist() == ["", "pos"]
    pred = tagger.predict(_pad(X, 0.0), lengths=lengths)
    i = int(np.argmin(lengths))
    assert pred[i, lengths[i]:].tolist() == ["<pad>"] * (pred.shape[1] - lengths[i])
    for p, q, T in zip(tagger.predict(X), pred, lengths):
        np.testing.assert_array_equal(q[:T], p)
    # and "<pad>" too: the fill grows until it is none
    tags2 = [np.where(t == "", "<pad>", "") for t in tags]
    tagger.fit(X, tags2)
    pred = tagger.predict(_pad(X, 0.0), lengths=lengths)
    assert pred[i, -1] == "<pad><pad>" and "<pad><pad>" not in tagger.classes_


def test_non_finite_per_step_values_are_named_by_sequence_and_step():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(4, 5, 1)), rng.normal(size=(4, 5))
    Y[2, 1] = np.nan
    reg = grucy.GRURegressor(return_sequences=True, hidden_size=4, epochs=1)
    # (was "first at index (11,)": a row of the internal packed array)
    with pytest.raises(ValueError, match=r"y contains NaN or inf within sequence 2 "
                                         r"\(step 1\)"):
        reg.fit(X, Y)
    with pytest.raises(ValueError, match=r"y contains NaN or inf within sequence 2 "
                                         r"\(step 1\)"):
        reg.fit(list(X[:, :, 0]), [y for y in Y])
    w = np.ones((4, 5))
    w[3, 4] = np.inf
    with pytest.raises(ValueError, match=r"sample_weight contains NaN or inf within "
                                         r"sequence 3 \(step 4\)"):
        reg.fit(X, np.nan_to_num(Y), sample_weight=w)


# -- labels and inputs as pandas and object arrays hand them over --------------------------
def test_object_labels_with_a_missing_value_are_refused_as_float_ones_are():
    """An object column [1, 2, nan, ...] (labels with gaps) made NaN a class (several,
    unsorted: classes_ [1 2 nan 2 nan 2]) and trained on a garbage encoding."""
    X = np.random.default_rng(0).normal(size=(30, 5))
    y = np.array([1, 2] * 15, dtype=object)
    y[3] = y[8] = np.nan
    kw = dict(hidden_size=4, epochs=1, random_state=0)
    with pytest.raises(ValueError, match=r"^y contains a missing label \(nan, first at "
                                         r"index \(3,\)\); every sample needs a class"):
        grucy.GRUClassifier(**kw).fit(X, y)
    y[3] = y[8] = 1
    y[5] = None
    with pytest.raises(ValueError, match=r"missing label \(None, first at index \(5,\)\)"):
        grucy.GRUClassifier(**kw).fit(X, y)
    Y = np.where(X > 0, "a", "b").astype(object)  # a label per step
    Y[4, 2] = float("nan")
    with pytest.raises(ValueError, match=r"missing label \(nan, first at index \(.+\)\)"):
        grucy.GRUClassifier(return_sequences=True, **kw).fit(X, Y)


def test_pandas_missing_values_in_X_are_named():
    pd = pytest.importorskip("pandas", reason="pandas")
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 4))).astype("Float64")
    X.iloc[3, 2] = pd.NA
    y = np.arange(20) % 2
    with pytest.raises(ValueError, match=r"^X contains a missing value \(<NA>, first at "
                                         r"index \(3, 2\)\); fill or drop it first"):
        grucy.GRUClassifier(hidden_size=4, epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="X must hold real numbers: could not convert "
                                         "string to float: 'a'"):
        grucy.GRUClassifier(hidden_size=4, epochs=1).fit(np.array([[1, "a"]] * 4,
                                                                  dtype=object), [0, 1] * 2)


def test_a_validation_split_of_total_weight_zero_is_refused():
    """Its loss was 0/0 = NaN every epoch, and early stopping, never seeing an
    improvement, ended the run after `patience` epochs without a word."""
    series = np.sin(np.arange(120.0) / 3)
    w = np.ones(120)
    w[-25:] = 0.0  # the newest values flagged unreliable
    kw = dict(lookback=6, hidden_size=4, epochs=10, validation_fraction=0.2, patience=2)
    with pytest.raises(ValueError, match=r"validation examples \(val_idx; an estimator's "
                                         r"validation_fraction picks them\) have total "
                                         r"weight 0"):
        grucy.Forecaster(**kw).fit(series, sample_weight=w)
    from grucy.models.base import _validation_split
    X, _, _ = _ragged(n=20)
    Y = [x[:, 0] for x in X]
    sw = [np.ones(len(x)) for x in X]
    task = dict(validation_fraction=0.2, hidden_size=4, epochs=3, random_state=0,
                return_sequences=True)
    model = grucy.GRURegressor(**task)
    _, val = _validation_split(20, 0.2, np.random.default_rng(0))  # the split fit draws
    for k in val:  # sequences whose steps are all unlabelled stay in the data
        sw[k][:] = 0.0
    with pytest.raises(ValueError, match="have total weight 0"):
        model.fit(X, Y, sample_weight=sw)
    sw[val[0]][0] = 1.0  # one weighted step is enough
    assert np.isfinite(model.fit(X, Y, sample_weight=sw).history_["val_loss"]).all()
    net = grucy.nn.Sequential(grucy.nn.Linear(2, 1))
    with pytest.raises(ValueError, match="the 2 validation examples"):
        SequenceTask(net, np.ones((4, 3, 2)), np.ones((4, 1)), grucy.losses.mse_loss,
                     [0, 1], [2, 3], weight=np.array([1.0, 1.0, 0.0, 0.0]))


def test_score_takes_a_column_of_targets_and_refuses_labels_of_another_kind():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    y = X[:, -1] + X[:, 0]
    reg = grucy.GRURegressor(hidden_size=4, epochs=2, random_state=0).fit(X, y)
    assert reg.score(X, y[:, None]) == reg.score(X, y)  # as r2_score takes it
    clf = grucy.GRUClassifier(hidden_size=4, epochs=1, random_state=0).fit(X, y > 0)
    labels = (y > 0).astype(int)
    clf = grucy.GRUClassifier(hidden_size=4, epochs=1, random_state=0).fit(X, labels)
    with pytest.raises(ValueError, match=r"y holds strings, but the classifier's classes_ "
                                         r"are numbers"):
        clf.score(X, labels.astype(str))  # every prediction "wrong": 0.0 before
