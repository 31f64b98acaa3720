"""Input validation of the entry points around the GRU layers: grucy.nn, grucy.losses,
grucy.optim, grucy.training, the models, grucy.interop and grucy.torch.

Every refusal must be a ValueError / TypeError / RuntimeError whose message names the
argument, what was expected and what was given (each case below checks the message with
a regular expression, not only the class); a refused call changes nothing.  Cases that
reach compiled code also run in a child process in test_crash_matrix.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import grucy
from grucy import losses
from grucy.nn import Dropout, Embedding, Linear, Sequential, TruncatedBPTT
from grucy.optim import SGD, Adam, AdamW, ReduceLROnPlateau
from grucy.training import ArrayTask, StreamTask, Trainer

from conftest import importorskip


def _refused(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


# -- grucy.nn -----------------------------------------------------------------------------
def _emb():
    return Embedding(5, 3, dtype=np.float64, seed=0)


def _drop():
    return Dropout(0.5, seed=0)


def _trained_emb():
    e = _emb()
    e.forward(np.array([1, 2]))
    return e


def _trained_drop():
    d = _drop()
    d.forward(np.ones((2, 3)))
    return d


NN_CASES = [
    ("emb-seed", lambda: Embedding(5, 3, seed="x"), TypeError, r"seed must be None.*'x'"),
    ("emb-huge", lambda: Embedding(2**40, 2**20), grucy.SizeLimitError, r"Embedding\("),
    ("emb-float-indices", lambda: _emb().forward([[1.5]]), TypeError,
     r"indices must be integers, got dtype float64"),
    ("emb-bool-indices", lambda: _emb().forward(np.array([True])), TypeError,
     r"indices .*got dtype bool"),
    ("emb-ragged-indices", lambda: _emb().forward([[1, 2], [3]]), ValueError,
     r"indices must be a rectangular array"),
    ("emb-strings", lambda: _emb().forward("a"), TypeError, r"indices .*dtype <U1"),
    ("emb-out-of-range", lambda: _emb().forward([0, 5]), ValueError,
     r"indices must lie in \[0, num_embeddings=5\), got values in \[0, 5\]"),
    ("emb-negative", lambda: _emb().forward([-1]), ValueError, r"got values in \[-1, -1\]"),
    ("emb-training-string", lambda: _emb().forward([1], training="yes"), TypeError,
     r"training must be True or False, got str 'yes'"),
    ("emb-bwd-no-forward", lambda: _emb().backward(np.zeros((2, 3))), RuntimeError,
     r"backward\(\) needs a preceding forward"),
    ("emb-bwd-shape", lambda: _trained_emb().backward(np.zeros((3, 3))), ValueError,
     r"dy must have the shape of y, \(2, 3\), got \(3, 3\)"),
    ("emb-bwd-nan", lambda: _trained_emb().backward(np.full((2, 3), np.nan)), ValueError,
     r"dy contains NaN or inf"),
    ("emb-bwd-strings", lambda: _trained_emb().backward(np.full((2, 3), "a")), TypeError,
     r"dy must be an array of real numbers"),
    ("drop-p-string", lambda: Dropout("a"), TypeError, r"p must be a number in \[0, 1\)"),
    ("drop-seed", lambda: Dropout(0.5, seed="x"), TypeError, r"seed must be None"),
    ("drop-strings", lambda: _drop().forward("abc"), TypeError, r"x must be an array of real"),
    ("drop-none", lambda: _drop().forward(None), TypeError, r"x .*dtype object"),
    ("drop-complex", lambda: _drop().forward(np.ones(2, complex)), TypeError,
     r"x .*complex128"),
    ("drop-bool", lambda: _drop().forward(np.ones(2, bool)), TypeError, r"x .*dtype bool"),
    ("drop-nan", lambda: _drop().forward([1.0, np.nan]), ValueError, r"x contains NaN"),
    ("drop-nan-eval", lambda: _drop().forward([np.inf], training=False), ValueError,
     r"x contains NaN or inf"),
    ("drop-ragged", lambda: _drop().forward([[1, 2], [3]]), ValueError,
     r"x must be a rectangular array"),
    ("drop-training-string", lambda: _drop().forward([1.0], training="no"), TypeError,
     r"training must be True or False"),
    ("drop-bwd-no-forward", lambda: _drop().backward(np.ones(3)), RuntimeError,
     r"needs a preceding forward"),
    ("drop-bwd-shape", lambda: _trained_drop().backward(np.ones(4)), ValueError,
     r"dy must have the shape of y, \(2, 3\), got \(4,\)"),
    ("drop-bwd-strings", lambda: _trained_drop().backward("x"), TypeError,
     r"dy must be an array of real numbers"),
    ("drop-bwd-nan", lambda: _trained_drop().backward(np.full((2, 3), np.nan)), ValueError,
     r"dy contains NaN"),
    ("drop-p0-bwd-shape",
     lambda: (lambda d: (d.forward(np.ones(3)), d.backward(np.ones(5))))(Dropout(0.0)),
     ValueError, r"dy must have the shape of y, \(3,\), got \(5,\)"),
    ("seq-gru", lambda: Sequential(grucy.GRU(3, 4)), TypeError,
     r"layer 0 is a GRU, whose forward returns \(y, h_n\)"),
    ("seq-embedding-not-first", lambda: Sequential(Linear(3, 2), Embedding(4, 2)),
     ValueError, r"layer 1 is an Embedding: it may only come first"),
    ("seq-training-string", lambda: Sequential(Linear(3, 2)).forward(np.ones((1, 3)), "x"),
     TypeError, r"training must be True or False"),
    ("tbptt-not-a-gru", lambda: TruncatedBPTT("gru", 2), TypeError,
     r"gru must be a grucy GRU layer .*got str"),
    ("tbptt-repeated-rows",
     lambda: TruncatedBPTT(grucy.GRU(3, 4), 2).forward(np.ones((3, 2, 3)), rows=[0, 0]),
     ValueError, r"rows must not repeat a stream"),
    ("tbptt-float-rows",
     lambda: TruncatedBPTT(grucy.GRU(3, 4), 2).forward(np.ones((3, 1, 3)), rows=[1.0]),
     TypeError, r"rows must be a 1-D array of integer stream indices, got dtype float64"),
    ("tbptt-rows-range",
     lambda: TruncatedBPTT(grucy.GRU(3, 4), 2).forward(np.ones((3, 1, 3)), rows=[5]),
     ValueError, r"rows must lie in \[0, n_streams=2\), got values in \[5, 5\]"),
    ("tbptt-batch-vs-rows",
     lambda: TruncatedBPTT(grucy.GRU(3, 4), 2).forward(np.ones((3, 3, 3))), ValueError,
     r"x has 3 sequences on axis 1 but rows selects 2 streams"),
    ("tbptt-split-scalar", lambda: TruncatedBPTT.split_streams("abc", 2), TypeError,
     r"sequence must be an array of items \(N, \.\.\.\), got a str scalar"),
]


@pytest.mark.parametrize("case_id, fn, exc, match", NN_CASES, ids=[c[0] for c in NN_CASES])
def test_nn_refusals_name_the_argument(case_id, fn, exc, match):
    _refused(fn, exc, match)


def test_dropout_of_integers_scales_in_floating_point():
    """Integers used to get an integer mask: 1/(1-p) truncated to 1, so nothing was
    scaled (silently wrong numbers)."""
    y = Dropout(0.3, seed=0)(np.ones(2000, np.int64))
    assert y.dtype == np.float64
    kept = y[y != 0]
    np.testing.assert_allclose(kept, 1 / 0.7, rtol=1e-15)
    assert 0.6 < kept.size / y.size < 0.8


def test_dropout_backward_returns_the_forward_dtype_and_a_new_array():
    d = Dropout(0.0)
    x = np.ones((2, 3), np.float32)
    assert d.forward(x) is x  # the identity, as in PyTorch
    dy = np.ones((2, 3))
    dx = d.backward(dy)
    assert dx.dtype == np.float32 and dx is not dy
    d2 = Dropout(0.5, seed=1)
    y = d2.forward(x)
    dx2 = d2.backward(dy)
    assert dx2.dtype == np.float32
    np.testing.assert_array_equal(dx2, y)  # x is ones: y is the mask


def test_embedding_checks_the_rows_it_reads_and_a_refused_backward_keeps_the_forward():
    e = _emb()
    e.weight[4, 1] = np.nan  # written in place, in a row not looked up
    np.testing.assert_array_equal(e.forward([0, 1]), e.weight[[0, 1]])
    with pytest.raises(ValueError, match=r"rows of weight looked up contains NaN"):
        e.forward([[4, 0]])
    e.weight[4, 1] = 0
    e.forward([1, 2])
    with pytest.raises(ValueError, match="dy must have the shape"):
        e.backward(np.zeros((5, 3)))
    e.backward(np.ones((2, 3)))  # the forward was not consumed by the refusal
    np.testing.assert_array_equal(e.grads["weight"][[1, 2]], 1)
    e.grads["weight"] = np.zeros((5, 3), np.float32)  # replaced by the wrong dtype
    e.forward([1])
    with pytest.raises(ValueError, match=r"grads\['weight'\] must be a writeable"):
        e.backward(np.ones((1, 3)))


def test_sequential_accepts_layers_without_generators():
    class Scale:
        def forward(self, x, training=True):
            return 2 * np.asarray(x)

        def backward(self, dy):
            return 2 * np.asarray(dy)

    net = Sequential(Linear(3, 2, dtype=np.float64, seed=0), Scale())
    assert net.generators() == []
    net.forward(np.ones((1, 3)))
    np.testing.assert_array_equal(net.backward(np.ones((1, 2))),
                                  2 * np.ones((1, 2)) @ net[0].weight)


# -- grucy.losses -------------------------------------------------------------------------
LOSS_CASES = [
    ("huber-delta-string", lambda: losses.huber_loss([1.0], [1.0], delta="a"), TypeError,
     r"delta must be a real number, got str 'a'"),
    ("huber-delta-none", lambda: losses.huber_loss([1.0], [1.0], delta=None), TypeError,
     r"delta must be a real number, got NoneType"),
    ("huber-delta-bool", lambda: losses.huber_loss([1.0], [1.0], delta=True), TypeError,
     r"delta must be a real number, got bool"),
    ("huber-delta-nan", lambda: losses.huber_loss([1.0], [1.0], delta=np.nan), ValueError,
     r"delta must be finite"),
    ("ce-target-ragged", lambda: losses.cross_entropy_loss(np.zeros((2, 3)), [[0], [1, 2]]),
     ValueError, r"target must be a rectangular array"),
    ("ce-target-bool", lambda: losses.cross_entropy_loss(np.zeros((2, 3)), [True, False]),
     TypeError, r"target .*dtype bool"),
    ("ce-target-none", lambda: losses.cross_entropy_loss(np.zeros((2, 3)), None), TypeError,
     r"target .*dtype object"),
    ("count-terms-string", lambda: losses.count_terms("ab"), TypeError,
     r"shape must be a tuple of non-negative integers, got 'ab'"),
    ("count-terms-int", lambda: losses.count_terms(5), TypeError, r"got 5"),
    ("count-terms-float", lambda: losses.count_terms((2.5,)), TypeError, r"shape must be"),
    ("count-terms-negative", lambda: losses.count_terms((2, -1)), ValueError,
     r"got \(2, -1\)"),
    ("weight-negative", lambda: losses.mse_loss(np.zeros(3), np.zeros(3), weight=[1, -2, 1]),
     ValueError, r"weight must be finite and >= 0, got -2.0 at index \(1,\)"),
    ("weight-nan", lambda: losses.mae_loss(np.zeros(3), np.zeros(3), weight=[1, np.nan, 1]),
     ValueError, r"got nan at index \(1,\)"),
    ("weight-ragged", lambda: losses.mse_loss(np.zeros(2), np.zeros(2), weight=[[1], [1, 2]]),
     ValueError, r"weight must be a rectangular array"),
]


@pytest.mark.parametrize("case_id, fn, exc, match", LOSS_CASES,
                         ids=[c[0] for c in LOSS_CASES])
def test_loss_refusals_name_the_argument(case_id, fn, exc, match):
    _refused(fn, exc, match)


# -- grucy.optim --------------------------------------------------------------------------
def _pg():
    return [np.arange(3.0)], [np.ones(3)]


OPTIM_CASES = [
    ("sgd-nesterov-string", lambda: SGD(*_pg(), nesterov="no"), TypeError,
     r"nesterov must be True or False, got str 'no'"),
    ("sgd-nesterov-needs-momentum", lambda: SGD(*_pg(), nesterov=True), ValueError,
     r"nesterov=True needs momentum > 0 and dampening = 0, got momentum=0.0"),
    ("sgd-lr-negative", lambda: SGD(*_pg(), lr=-1), ValueError, r"lr must be >= 0, got -1"),
    ("sgd-int-params", lambda: SGD([np.zeros(2, int)], [np.zeros(2)]), TypeError,
     r"params\[0\] must have a floating dtype, got int64"),
    ("sgd-list-params", lambda: SGD([[0.0, 1.0]], [np.zeros(2)]), TypeError,
     r"params\[0\] must be a NumPy array, got list"),
    ("sgd-read-only-params",
     lambda: SGD([np.broadcast_to(np.zeros(1), (2,))], [np.zeros(2)]), ValueError,
     r"params\[0\] is read-only"),
    ("adamw-betas-string", lambda: AdamW(*_pg(), betas="ab"), TypeError,
     r"betas must be a pair \(beta1, beta2\), got 'ab'"),
    ("adamw-betas-three", lambda: AdamW(*_pg(), betas=(0.9, 0.9, 0.9)), ValueError,
     r"betas must be a pair"),
    ("adamw-beta-one", lambda: AdamW(*_pg(), betas=(0.9, 1.0)), ValueError,
     r"betas\[1\] must be in \[0, 1\), got 1.0"),
    ("adamw-lr-string", lambda: AdamW(*_pg(), lr="fast"), TypeError,
     r"lr must be a real number, got str 'fast'"),
    ("adamw-weight-decay-inf", lambda: AdamW(*_pg(), weight_decay=np.inf), ValueError,
     r"weight_decay must be finite, got inf"),
    ("adamw-grads-complex", lambda: AdamW([np.zeros(2)], [np.zeros(2, complex)]), TypeError,
     r"grads\[0\] must have a floating dtype, got complex128"),
    ("plateau-metric-string", lambda: ReduceLROnPlateau(SGD(*_pg())).step("abc"), TypeError,
     r"metric must be a real number, got str 'abc'"),
    ("plateau-metric-list", lambda: ReduceLROnPlateau(SGD(*_pg())).step([1.0]), TypeError,
     r"metric must be a real number, got list"),
]


@pytest.mark.parametrize("case_id, fn, exc, match", OPTIM_CASES,
                         ids=[c[0] for c in OPTIM_CASES])
def test_optim_refusals_name_the_argument(case_id, fn, exc, match):
    _refused(fn, exc, match)


@pytest.mark.parametrize("make", [lambda p, g: SGD(p, g, lr=0.1, momentum=0.9),
                                  lambda p, g: Adam(p, g), lambda p, g: AdamW(p, g)],
                         ids=["SGD", "Adam", "AdamW"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_step_with_non_finite_gradients_changes_nothing(make, value):
    params, grads = [np.arange(3.0), np.ones((2, 2))], [np.ones(3), np.ones((2, 2))]
    opt = make(params, grads)
    opt.step()
    before = ([p.copy() for p in params], opt.state_dict())
    grads[1][1, 0] = value
    with pytest.raises(ValueError, match=r"grads\[1\] contains NaN or inf .*updated nothing"):
        opt.step()
    for p, q in zip(params, before[0]):
        np.testing.assert_array_equal(p, q)
    after = opt.state_dict()
    assert after["step"] == before[1]["step"] == 1
    for b in opt._buffers:
        for x, y in zip(after[b], before[1][b]):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("value, exc", [(np.nan, ValueError), (-1.0, ValueError),
                                        ("x", TypeError), (None, TypeError)])
def test_a_bad_learning_rate_is_refused_on_assignment(value, exc):
    params, grads = _pg()
    opt = Adam(params, grads, lr=0.1)
    with pytest.raises(exc, match="lr must be"):
        opt.lr = value
    assert opt.lr == 0.1
    opt.step()
    assert np.all(np.isfinite(params[0]))


def _adam_state(**changes):
    state = {"name": "Adam", "step": 3, "lr": 0.01, "betas": [0.8, 0.9], "eps": 1e-7,
             "weight_decay": 0.0, "exp_avg": [np.full(3, 0.5), np.full(2, 0.5)],
             "exp_avg_sq": [np.full(3, 0.25), np.full(2, 0.25)]}
    state.update(changes)
    return state


@pytest.mark.parametrize("changes, exc, match", [
    (dict(exp_avg_sq=[np.full(3, 0.25), np.full(2, "a")]), TypeError,
     r"state\['exp_avg_sq'\]\[1\] must be an array of real numbers"),
    (dict(exp_avg_sq=[np.full(3, 0.25), np.array([0.1, np.nan])]), ValueError,
     r"state\['exp_avg_sq'\]\[1\] contains NaN"),
    (dict(exp_avg_sq=[np.full(3, 0.25), np.zeros(3)]), ValueError,
     r"state\['exp_avg_sq'\]\[1\] has shape \(3,\), expected \(2,\)"),
    (dict(exp_avg=5), TypeError, r"state\['exp_avg'\] must be a list of arrays, got int"),
    (dict(eps=0), ValueError, r"eps must be > 0"),
    (dict(lr=-1), ValueError, r"lr must be >= 0, got -1"),
    (dict(betas=[0.9]), ValueError, r"betas must be a pair"),
    (dict(betas=[0.9, 1.5]), ValueError, r"betas\[1\] must be in \[0, 1\)"),
    (dict(step=-2), ValueError, r"state\['step'\] must be a non-negative integer"),
])
def test_failed_optimizer_load_changes_nothing(changes, exc, match):
    params, grads = [np.zeros(3), np.zeros(2)], [np.ones(3), np.ones(2)]
    opt = Adam(params, grads)
    opt.step()
    before = opt.state_dict()
    with pytest.raises(exc, match=match):
        opt.load_state_dict(_adam_state(**changes))
    after = opt.state_dict()
    for k, v in before.items():
        if isinstance(v, list) and v and isinstance(v[0], np.ndarray):
            for x, y in zip(after[k], v):
                np.testing.assert_array_equal(x, y)
        else:
            assert after[k] == v, k
    opt.load_state_dict(_adam_state())  # a good state still loads
    assert opt.t == 3 and opt.betas == (0.8, 0.9)
    np.testing.assert_array_equal(opt.exp_avg[0], 0.5)


# -- grucy.training -----------------------------------------------------------------------
def _net():
    return Sequential(Linear(3, 2, dtype=np.float64, seed=0))


def _data(n=10):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 3)), rng.standard_normal((n, 2))


def _task(**kw):
    X, Y = _data()
    args = dict(net=_net(), X=X, Y=Y, loss=losses.mse_loss, train_idx=np.arange(8),
                val_idx=[8, 9])
    args.update(kw)
    return ArrayTask(**args)


TRAIN_CASES = [
    ("task-length-mismatch", lambda: _task(Y=np.zeros((5, 2))), ValueError,
     r"X and Y must hold the same number of examples .*\(10, 3\) and \(5, 2\)"),
    ("task-index-past-end", lambda: _task(train_idx=np.arange(12)), ValueError,
     r"train_idx must lie in \[0, 10\) .*got values in \[0, 11\]"),
    ("task-negative-index", lambda: _task(val_idx=[-1]), ValueError,
     r"val_idx must lie in \[0, 10\)"),
    ("task-fractional-index", lambda: _task(train_idx=[0.5, 1.7]), TypeError,
     r"train_idx must be a 1-D array of integer example indices, got dtype float64"),
    ("task-2d-index", lambda: _task(train_idx=[[0, 1]]), TypeError, r"shape \(1, 2\)"),
    ("task-no-training", lambda: _task(train_idx=[]), ValueError, r"train_idx is empty"),
    ("task-loss-name", lambda: _task(loss="mse"), TypeError,
     r"loss must be a callable .*got str 'mse'"),
    ("task-net-string", lambda: _task(net="net"), TypeError,
     r"net must be a network with forward, backward, parameters and grads, got str"),
    ("task-metrics-int", lambda: _task(metrics=5), TypeError, r"metrics must be a dict"),
    ("task-metric-not-callable", lambda: _task(metrics={"a": 5}), TypeError,
     r"metrics must be a dict"),
    ("task-x-nan", lambda: _task(X=np.full((10, 3), np.nan)), ValueError,
     r"X contains NaN or inf"),
    ("task-y-strings", lambda: _task(Y=np.full((10, 2), "a")), TypeError,
     r"Y must be an array of real numbers"),
    ("trainer-min-delta", lambda: Trainer(_task(), epochs=1, min_delta="a"), TypeError,
     r"min_delta must be a real number, got str 'a'"),
    ("trainer-min-delta-nan", lambda: Trainer(_task(), epochs=1, min_delta=np.nan),
     ValueError, r"min_delta must be finite"),
    ("trainer-verbose", lambda: Trainer(_task(), epochs=1, verbose="loud"), TypeError,
     r"verbose must be a non-negative integer \(0, 1 or 2\), got 'loud'"),
    ("trainer-seed", lambda: Trainer(_task(), epochs=1, seed="x"), TypeError,
     r"seed must be None, a non-negative integer .*'x'"),
    ("trainer-max-grad-norm-bool", lambda: Trainer(_task(), epochs=1, max_grad_norm=True),
     ValueError, r"max_grad_norm must be None or > 0, got True"),
    ("trainer-checkpoint-int", lambda: Trainer(_task(), epochs=1, checkpoint=5), TypeError,
     r"checkpoint must be None or a path \(str or os.PathLike\), got int 5"),
    ("trainer-resume-int", lambda: Trainer(_task(), epochs=1, resume=1.5), TypeError,
     r"resume must be None or a path"),
    ("trainer-description", lambda: Trainer(_task(), epochs=1, description=5), TypeError,
     r"description must be a str, got int"),
    ("trainer-metadata-int", lambda: Trainer(_task(), epochs=1, metadata=5), TypeError,
     r"metadata must be a dict, got int"),
    ("trainer-metadata-object", lambda: Trainer(_task(), epochs=1, metadata={"a": object()}),
     TypeError, r"metadata must be plain JSON data"),
    ("trainer-optimizer-options", lambda: Trainer(_task(), epochs=1, optimizer_options=5),
     TypeError, r"optimizer_options must be a dict of keyword arguments, got int"),
    ("trainer-epochs-float", lambda: Trainer(_task(), epochs=1.5), TypeError,
     r"epochs must be an integer, got float 1.5"),
    ("trainer-batch-zero", lambda: Trainer(_task(), epochs=1, batch_size=0), ValueError,
     r"batch_size must be a positive integer, got 0"),
    ("stream-task-net", lambda: StreamTask(_net(), np.zeros((2, 5), int), None,
                                           losses.cross_entropy_loss, 2),
     TypeError, r"net must be a network with reset_state, .*\(missing reset_state\)"),
]


def _char_net():
    from grucy.models import CharNet
    return CharNet(5, 3, 4, dtype=np.float64, seed=0)


TRAIN_CASES += [
    ("stream-task-val-1d", lambda: StreamTask(_char_net(), np.zeros((2, 5), int),
                                              np.zeros(5, int), losses.cross_entropy_loss, 2),
     ValueError, r"val_streams must be \(S, L\) with S >= 1 and L >= 2, got shape \(5,\)"),
    ("stream-task-float-codes", lambda: StreamTask(_char_net(), np.zeros((2, 5)), None,
                                                   losses.cross_entropy_loss, 2),
     TypeError, r"train_streams must hold integer token codes, got dtype float64"),
    ("stream-task-short", lambda: StreamTask(_char_net(), np.zeros((2, 1), int), None,
                                             losses.cross_entropy_loss, 2),
     ValueError, r"train_streams must be \(S, L\)"),
]


@pytest.mark.parametrize("case_id, fn, exc, match", TRAIN_CASES,
                         ids=[c[0] for c in TRAIN_CASES])
def test_training_refusals_name_the_argument(case_id, fn, exc, match):
    _refused(fn, exc, match)


def test_a_checkpoint_into_a_missing_directory_fails_before_training(tmp_path):
    task = _task()
    before = [p.copy() for p in task.parameters()]
    trainer = Trainer(task, epochs=2, checkpoint=tmp_path / "no" / "ck-{epoch}.grucy")
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*directory .*does not exist"):
        trainer.fit()
    assert trainer.epoch == 0 and trainer.step == 0
    for p, q in zip(task.parameters(), before):
        np.testing.assert_array_equal(p, q)


# -- models -------------------------------------------------------------------------------
KW = dict(epochs=1, hidden_size=4, random_state=0)
SERIES = np.sin(np.arange(60) / 3)
XS = np.random.default_rng(0).standard_normal((20, 6))
YS = np.arange(20) % 2
TEXT = "hello world, hello grucy. " * 8


@pytest.fixture(scope="module")
def fitted():
    return {
        "forecaster": grucy.Forecaster(**KW).fit(SERIES),
        "forecaster2": grucy.Forecaster(**KW).fit(np.c_[SERIES, SERIES]),
        "classifier": grucy.GRUClassifier(**KW).fit(XS, YS),
        "regressor": grucy.GRURegressor(**KW).fit(XS, YS.astype(float)),
        "charlm": grucy.CharLM(epochs=1, hidden_size=8, embedding_dim=4, bptt=8,
                               batch_size=2, random_state=0).fit(TEXT),
    }


NOT_FITTED = [
    ("forecaster-predict", lambda: grucy.Forecaster().predict(SERIES)),
    ("classifier-predict", lambda: grucy.GRUClassifier().predict(XS)),
    ("classifier-proba", lambda: grucy.GRUClassifier().predict_proba(XS)),
    ("classifier-score", lambda: grucy.GRUClassifier().score(XS, YS)),
    ("regressor-predict", lambda: grucy.GRURegressor().predict(XS)),
    ("charlm-generate", lambda: grucy.CharLM().generate()),
    ("charlm-encode", lambda: grucy.CharLM().encode("abc")),
    ("charlm-bits", lambda: grucy.CharLM().bits_per_char("abc")),
]


@pytest.mark.parametrize("case_id, fn", NOT_FITTED, ids=[c[0] for c in NOT_FITTED])
def test_use_before_fit_raises_not_fitted(case_id, fn):
    with pytest.raises(grucy.NotFittedError, match=r"is not fitted yet.*Call 'fit'") as info:
        fn()
    assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError)


def _poisoned(a, index, value=np.inf):
    """A float copy of ``a`` with ``value`` at ``index``."""
    a = np.array(a, dtype=np.float64)
    a[index] = value
    return a


FIT_CASES = [
    ("fc-empty", lambda: grucy.Forecaster(**KW).fit([]), ValueError,
     r"y is empty \(shape \(0,\)\)"),
    ("fc-no-rows", lambda: grucy.Forecaster(**KW).fit(np.zeros((0, 2))), ValueError,
     r"y is empty \(shape \(0, 2\)\)"),
    ("fc-no-columns", lambda: grucy.Forecaster(**KW).fit(np.zeros((60, 0))), ValueError,
     r"y is empty \(shape \(60, 0\)\)"),
    ("fc-strings", lambda: grucy.Forecaster(**KW).fit("abc"), TypeError,
     r"y must hold real numbers, got dtype <U3"),
    ("fc-nan", lambda: grucy.Forecaster(**KW).fit(np.r_[SERIES, np.nan]), ValueError,
     r"^y contains NaN or inf \(first at index \(60,\), value nan\); fill or drop"),
    ("fc-3d", lambda: grucy.Forecaster(**KW).fit(SERIES.reshape(3, 4, 5)), ValueError,
     r"y must be 1-D \(n,\) or 2-D \(n, k\), got shape \(3, 4, 5\)"),
    ("fc-short", lambda: grucy.Forecaster(lookback=100, **KW).fit(SERIES), ValueError,
     r"y needs at least lookback \+ horizon = 101 values, got 60"),
    ("fc-dropout-string", lambda: grucy.Forecaster(dropout="a", **KW).fit(SERIES), TypeError,
     r"dropout must be a number in \[0, 1\), got 'a'"),
    ("fc-hidden-zero", lambda: grucy.Forecaster(hidden_size=0, epochs=1).fit(SERIES),
     ValueError, r"hidden_size must be a positive integer, got 0"),
    ("fc-loss", lambda: grucy.Forecaster(loss="l2", **KW).fit(SERIES), ValueError,
     r"loss must be one of \['huber', 'mae', 'mse'\], got 'l2'"),
    ("fc-dtype", lambda: grucy.Forecaster(dtype="float16", **KW).fit(SERIES), TypeError,
     r"dtype must be float32 or float64, got float16"),
    ("fc-random-state", lambda: grucy.Forecaster(epochs=1, random_state="x").fit(SERIES),
     TypeError, r"random_state must be None, an int or a generator"),
    ("fc-verbose", lambda: grucy.Forecaster(verbose="x", **KW).fit(SERIES), TypeError,
     r"verbose must be a non-negative integer"),
    ("clf-y-length", lambda: grucy.GRUClassifier(**KW).fit(XS, YS[:5]), ValueError,
     r"X and y must have the same number of samples, got 20 and 5"),
    ("clf-y-none", lambda: grucy.GRUClassifier(**KW).fit(XS, None), ValueError,
     r"requires y to be passed"),
    ("clf-one-class", lambda: grucy.GRUClassifier(**KW).fit(XS, np.zeros(20)), ValueError,
     r"needs samples of at least 2 classes"),
    ("clf-y-nan", lambda: grucy.GRUClassifier(**KW).fit(XS, np.full(20, np.nan)),
     ValueError, r"^y contains NaN or inf \(first at index \(0,\), value nan\)"),
    ("clf-x-inf", lambda: grucy.GRUClassifier(**KW).fit(_poisoned(XS, (7, 3)), YS),
     ValueError, r"^X contains NaN or inf \(first at index \(7, 3\), value inf\)"),
    ("clf-y-nan-late",
     lambda: grucy.GRUClassifier(**KW).fit(XS, _poisoned(YS, (11,), np.nan)), ValueError,
     r"^y contains NaN or inf \(first at index \(11,\), value nan\)"),
    ("reg-x-nan", lambda: grucy.GRURegressor(**KW).fit(_poisoned(XS[:, :, None], (4, 5, 0),
                                                                  np.nan), XS[:, 0]),
     ValueError, r"^X contains NaN or inf \(first at index \(4, 5, 0\), value nan\)"),
    ("reg-y-inf", lambda: grucy.GRURegressor(**KW).fit(XS, _poisoned(XS[:, :2], (9, 1))),
     ValueError, r"^y contains NaN or inf \(first at index \(9, 1\), value inf\)"),
    ("fc-nan-2d", lambda: grucy.Forecaster(**KW).fit(_poisoned(np.c_[SERIES, SERIES],
                                                                (33, 1), np.nan)),
     ValueError, r"^y contains NaN or inf \(first at index \(33, 1\), value nan\)"),
    ("clf-x-4d", lambda: grucy.GRUClassifier(**KW).fit(XS[:, :, None, None], YS),
     ValueError, r"X must be 2-D .* or 3-D .*got a 4-D array of shape \(20, 6, 1, 1\)"),
    ("clf-x-strings", lambda: grucy.GRUClassifier(**KW).fit(np.full((20, 6), "a"), YS),
     TypeError, r"X must hold real numbers, got dtype <U1"),
    ("clf-x-empty", lambda: grucy.GRUClassifier(**KW).fit(np.zeros((0, 6)), []), ValueError,
     r"0 sample\(s\)"),
    ("clf-bidirectional-string",
     lambda: grucy.GRUClassifier(bidirectional="yes", **KW).fit(XS, YS), TypeError,
     r"bidirectional must be True or False, got str 'yes'"),
    ("clf-dropout-one", lambda: grucy.GRUClassifier(dropout=1.0, **KW).fit(XS, YS),
     ValueError, r"dropout must be in \[0, 1\), got 1.0"),
    ("reg-y-strings", lambda: grucy.GRURegressor(**KW).fit(XS, np.full(20, "a")),
     ValueError, r"y must hold real numbers, got dtype <U1"),
    ("reg-y-3d", lambda: grucy.GRURegressor(**KW).fit(XS, np.zeros((20, 2, 2))), ValueError,
     r"y must be \(n_samples,\) or \(n_samples, n_targets\), got shape \(20, 2, 2\)"),
    ("reg-no-targets", lambda: grucy.GRURegressor(**KW).fit(XS, np.zeros((20, 0))),
     ValueError, r"y has no targets \(shape \(20, 0\)\)"),
    ("lm-bytes", lambda: grucy.CharLM(epochs=1).fit(b"bytes"), TypeError,
     r"text must be a str, got bytes"),
    ("lm-short", lambda: grucy.CharLM(epochs=1, batch_size=2).fit("ab"), ValueError,
     r"text is too short: 2 training characters for batch_size=2"),
    ("lm-bptt", lambda: grucy.CharLM(epochs=1, bptt=0).fit(TEXT), ValueError,
     r"bptt must be a positive integer, got 0"),
]


@pytest.mark.parametrize("case_id, fn, exc, match", FIT_CASES, ids=[c[0] for c in FIT_CASES])
def test_model_fit_refusals_name_the_argument(case_id, fn, exc, match):
    _refused(fn, exc, match)


FITTED_CASES = [
    ("fc-horizon-zero", "forecaster", lambda m: m.predict(SERIES, horizon=0), ValueError,
     r"horizon must be a positive integer, got 0"),
    ("fc-horizon-float", "forecaster", lambda m: m.predict(SERIES, horizon=2.0), TypeError,
     r"horizon must be an integer, got float 2.0"),
    ("fc-history-short", "forecaster", lambda m: m.predict(SERIES[:3]), ValueError,
     r"y needs at least lookback=12 steps, got 3"),
    ("fc-history-nan", "forecaster", lambda m: m.predict(np.r_[SERIES, np.nan]), ValueError,
     r"^y contains NaN or inf \(first at index \(60,\), value nan\)"),
    ("fc-history-empty", "forecaster", lambda m: m.predict(np.zeros((0, 20))), ValueError,
     r"y is empty \(shape \(0, 20\)\)"),
    ("fc-history-3d", "forecaster", lambda m: m.predict(SERIES.reshape(2, 3, 10)),
     ValueError, r"y must be \(m,\) or \(N, m\) for a model fitted on a 1-D series"),
    ("fc2-wrong-series", "forecaster2", lambda m: m.predict(np.c_[SERIES, SERIES, SERIES]),
     ValueError, r"y must be \(m, 2\) or \(N, m, 2\) for a model fitted on 2 series, "
                 r"got shape \(60, 3\)"),
    ("fc2-empty", "forecaster2", lambda m: m.predict(np.zeros((0, 20, 2))), ValueError,
     r"y is empty"),
    ("clf-features", "classifier", lambda m: m.predict(XS[:, :5]), ValueError,
     r"X has 5 features, but GRUClassifier is expecting 6 features"),
    ("clf-features-per-step", "classifier", lambda m: m.predict(np.stack([XS, XS], -1)),
     ValueError, r"X has 2 features per step, but GRUClassifier is expecting 1"),
    ("clf-1d", "classifier", lambda m: m.predict(XS[0]), ValueError,
     r"got a 1-D array of shape \(6,\)"),
    ("clf-nan", "classifier", lambda m: m.predict(np.full((2, 6), np.nan)), ValueError,
     r"^X contains NaN or inf \(first at index \(0, 0\), value nan\)"),
    ("clf-proba-empty", "classifier", lambda m: m.predict_proba(np.zeros((0, 6))),
     ValueError, r"0 sample\(s\)"),
    ("clf-score-y-length", "classifier", lambda m: m.score(XS, YS[:5]), ValueError,
     r"X and y must have the same number of samples, got 20 and 5"),
    ("clf-score-weight-shape", "classifier", lambda m: m.score(XS, YS, sample_weight=[1, 2]),
     ValueError, r"sample_weight must have shape \(n_samples,\) = \(20,\), got \(2,\)"),
    ("clf-score-weight-nan", "classifier",
     lambda m: m.score(XS, YS, sample_weight=np.full(20, np.nan)), ValueError,
     r"sample_weight contains NaN"),
    ("clf-score-weight-negative", "classifier",
     lambda m: m.score(XS, YS, sample_weight=-np.ones(20)), ValueError,
     r"sample_weight must be >= 0"),
    ("reg-score-y-length", "regressor", lambda m: m.score(XS, YS[:5]), ValueError,
     r"X and y must have the same number of samples, got 20 and 5"),
    ("reg-score-y-strings", "regressor", lambda m: m.score(XS, np.full(20, "a")), TypeError,
     r"y must be an array of real numbers"),
    ("reg-score-y-nan", "regressor", lambda m: m.score(XS, np.full(20, np.nan)), ValueError,
     r"y contains NaN"),
    ("reg-score-y-shape", "regressor", lambda m: m.score(XS, np.zeros((20, 2))), ValueError,
     r"y must have the shape of the predictions, \(20,\), got \(20, 2\)"),
    ("reg-features", "regressor", lambda m: m.predict(XS[:, :4]), ValueError,
     r"X has 4 features, but GRURegressor is expecting 6"),
    ("lm-temperature-string", "charlm", lambda m: m.generate(temperature="hot"), TypeError,
     r"temperature must be a real number, got str 'hot'"),
    ("lm-temperature-nan", "charlm", lambda m: m.generate(temperature=np.nan), ValueError,
     r"temperature must be finite"),
    ("lm-temperature-negative", "charlm", lambda m: m.generate(temperature=-1), ValueError,
     r"temperature must be >= 0, got -1.0"),
    ("lm-random-state", "charlm", lambda m: m.generate(random_state="x"), TypeError,
     r"random_state must be None, a non-negative integer"),
    ("lm-prompt-int", "charlm", lambda m: m.generate(prompt=5), ValueError,
     r"prompt must be a non-empty str, got 5"),
    ("lm-n-zero", "charlm", lambda m: m.generate(n=0), ValueError,
     r"n must be a positive integer, got 0"),
    ("lm-bits-short", "charlm", lambda m: m.bits_per_char("a"), ValueError,
     r"text needs at least 2 characters"),
    ("lm-bits-int", "charlm", lambda m: m.bits_per_char(5), TypeError,
     r"text must be a str, got int"),
    ("lm-bits-chunk", "charlm", lambda m: m.bits_per_char("abc", chunk=0), ValueError,
     r"chunk must be a positive integer, got 0"),
]


@pytest.mark.parametrize("case_id, name, fn, exc, match", FITTED_CASES,
                         ids=[c[0] for c in FITTED_CASES])
def test_fitted_model_refusals_name_the_argument(fitted, case_id, name, fn, exc, match):
    _refused(lambda: fn(fitted[name]), exc, match)


def test_regressor_score_of_a_mismatched_y_is_refused_not_computed(fitted):
    """score(X, y[:5]) used to reshape 20 predictions into 5 rows and return a number."""
    m = fitted["regressor"]
    y = YS.astype(float)
    pred = m.predict(XS)
    r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert m.score(XS, y) == pytest.approx(r2, rel=1e-12)
    w = np.linspace(0.5, 2, 20)
    mean = np.average(y, weights=w)
    r2w = 1 - np.average((y - pred) ** 2, weights=w) / np.average((y - mean) ** 2, weights=w)
    assert m.score(XS, y, sample_weight=w) == pytest.approx(r2w, rel=1e-12)


# -- grucy.interop and grucy.torch --------------------------------------------------------
def _small_gru(**kw):
    return grucy.GRU(3, 4, seed=0, **kw)


def test_onnx_export_arguments_are_checked(tmp_path):
    importorskip("onnx")
    from grucy import interop

    g = _small_gru()
    for kwargs, exc, match in [
        (dict(opset="17"), TypeError, r"opset must be an integer, got str '17'"),
        (dict(opset=17.5), TypeError, r"opset must be an integer, got float 17.5"),
        (dict(opset=10), ValueError, r"opset must be at least 14 .*got 10"),
        (dict(opset=10**6), ValueError, r"at most \d+ \(the newest this onnx .* knows\), "
                                        r"got 1000000"),
        (dict(batch_size=0), ValueError, r"batch_size must be a positive integer, got 0"),
        (dict(batch_size=True), TypeError, r"batch_size must be an integer, got bool"),
        (dict(seq_len=2.0), TypeError, r"seq_len must be an integer, got float"),
        (dict(h0="yes"), TypeError, r"h0 must be True or False, got str 'yes'"),
        (dict(lengths=2), TypeError, r"lengths must be True or False"),
        (dict(path=5), TypeError, r"path must be None or a path .*got int 5"),
    ]:
        with pytest.raises(exc, match=match):
            interop.to_onnx(g, **kwargs)
    with pytest.raises(FileNotFoundError, match=r"directory .* does not exist"):
        interop.to_onnx(g, path=tmp_path / "missing" / "m.onnx")
    with pytest.raises(TypeError, match=r"gru must be a grucy GRU layer .*got str"):
        interop.to_onnx("gru")
    with pytest.raises(FileNotFoundError):
        interop.from_onnx(tmp_path / "nope.onnx")
    with pytest.raises(TypeError, match=r"model_or_path must be an onnx.ModelProto, a path "
                                        r"or bytes, got int"):
        interop.from_onnx(5)
    with pytest.raises(TypeError, match=r"cls must be a grucy GRU class"):
        interop.from_onnx(interop.to_onnx(g), cls=str)


def test_torch_converters_refuse_wrong_types():
    torch = importorskip("torch")
    from grucy import interop

    for module, exc, match in [
        (torch.nn.LSTM(3, 4), TypeError, r"module must be a torch.nn.GRU, got LSTM"),
        ("gru", TypeError, r"module must be a torch.nn.GRU, got str"),
        (torch.nn.GRU(3, 4).half(), TypeError,
         r"module parameters must all be float32 or float64, got dtypes \['float16'\]"),
    ]:
        with pytest.raises(exc, match=match):
            interop.from_torch(module)
    m = torch.nn.GRU(3, 4)
    with torch.no_grad():
        m.weight_hh_l0[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"state_dict\['weight_hh_l0'\] contains NaN"):
        interop.from_torch(m)
    with pytest.raises(TypeError, match=r"gru must be a grucy GRU layer .*got GRU"):
        interop.to_torch(torch.nn.GRU(3, 4))
    with pytest.raises(TypeError, match=r"module_class must be torch.nn.GRU or a subclass"):
        interop.to_torch(_small_gru(), module_class=torch.nn.LSTM)
    with pytest.raises(ValueError, match=r"reset_after=False"):
        interop.to_torch(_small_gru(reset_after=False))


def test_keras_converters_refuse_wrong_types():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = importorskip("keras")
    from grucy import interop

    for layer, exc, match in [
        ("x", TypeError, r"layer must be a keras.layers.GRU, .*got str"),
        (keras.layers.LSTM(4), TypeError, r"got LSTM"),
        (keras.layers.GRU(4), ValueError, r"is not built: call it on data"),
        ([], ValueError, r"layer contains no GRU"),
        ([keras.layers.Dense(3)], TypeError, r"layer 0 \(dense\w*\) is a Dense"),
    ]:
        with pytest.raises(exc, match=match):
            interop.from_keras(layer)
    built = keras.layers.GRU(4)
    built.build((None, None, 3))
    with pytest.raises(TypeError, match=r"batch_first must be True or False, got str"):
        interop.from_keras(built, batch_first="yes")
    with pytest.raises(TypeError, match=r"gru must be a grucy GRU layer"):
        interop.to_keras("x")
    with pytest.raises(TypeError, match=r"return_sequences must be True or False, got str"):
        interop.to_keras(_small_gru(), return_sequences="no")
    with pytest.raises(ValueError, match=r"return_state=True needs num_layers=1"):
        interop.to_keras(grucy.GRU(3, 4, num_layers=2), return_state=True)


def test_grucy_torch_gru_refuses_bad_arguments_and_inputs():
    torch = importorskip("torch")
    from grucy.torch import GRU

    for args, kwargs, exc, match in [
        ((0, 4), {}, ValueError, r"input_size must be greater than zero"),
        ((3.5, 4), {}, TypeError, r"input_size should be of type int, got: float"),
        ((3, 4), dict(dropout=1.5), ValueError, r"dropout should be a number"),
        ((3, 4), dict(dtype=torch.float16), TypeError,
         r"computes in float32 or float64; parameter weight_ih_l0 has dtype torch.float16"),
        ((2**31, 4), {}, grucy.SizeLimitError, r"grucy.torch.GRU\(input_size=2147483648"),
        ((3, 2**20), {}, grucy.SizeLimitError, r"exceeds 2\*\*31-1"),
        ((4096, 4096), dict(num_layers=64, bidirectional=True), grucy.SizeLimitError,
         r"needs about .* GiB, more than"),
    ]:
        with pytest.raises(exc, match=match):
            GRU(*args, **kwargs)
    g = GRU(3, 4)
    x = torch.ones(5, 2, 3)
    for call, exc, match in [
        (lambda: g(torch.ones(5, 2, 4)), RuntimeError, r"Expected 3, got 4"),
        (lambda: g(torch.ones(5, 2, 3, 1)), ValueError, r"Expected input to be 2D or 3D, got 4D"),
        (lambda: g(x.double()), ValueError, r"input dtype \(torch.float64\) does not match"),
        (lambda: g(x.long()), ValueError, r"input dtype \(torch.int64\) does not match"),
        (lambda: g(np.ones((5, 2, 3), np.float32)), TypeError,
         r"input must be a torch.Tensor or a PackedSequence, got ndarray"),
        (lambda: g(torch.ones(0, 2, 3)), ValueError, r"at least one step and one sequence"),
        (lambda: g(torch.full((5, 2, 3), float("nan"))), ValueError, r"x contains NaN"),
        (lambda: g(x, torch.ones(1, 3, 4)), RuntimeError, r"Expected hidden size \(1, 2, 4\)"),
        (lambda: g(x, torch.full((1, 2, 4), float("inf"))), ValueError, r"h0 contains NaN"),
        (lambda: g(x, np.zeros((1, 2, 4))), TypeError,
         r"hx must be a torch.Tensor or None, got ndarray"),
        (lambda: g(x, "h"), TypeError, r"hx must be a torch.Tensor or None, got str"),
    ]:
        with pytest.raises(exc, match=match):
            call()
    y, _ = g(x)
    ref = torch.nn.GRU(3, 4)
    ref.load_state_dict(g.state_dict())
    torch.testing.assert_close(y, ref(x)[0], rtol=1e-5, atol=1e-6)  # still fine after all


# -- layouts: any memory layout, the same numbers; inputs never modified -------------------
def _layouts(a):
    """``a`` as C, Fortran, negative-stride (same values), strided and read-only arrays."""
    out = {"C": np.ascontiguousarray(a), "F": np.asfortranarray(a)}
    rev = np.ascontiguousarray(a[::-1])[::-1]
    out["negative-strides"] = rev
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    out["strided"] = wide[..., ::2]
    ro = a.copy()
    ro.flags.writeable = False
    out["read-only"] = ro
    return out


def test_building_blocks_give_identical_numbers_for_every_layout():
    rng = np.random.default_rng(21)
    idx = rng.integers(0, 9, size=(5, 4))
    x = rng.standard_normal((5, 4))
    ref_rows = Embedding(9, 3, seed=0).forward(idx)
    ref_drop = Dropout(0.5, seed=1).forward(x)
    for name, i in _layouts(idx).items():
        before = i.copy()
        np.testing.assert_array_equal(Embedding(9, 3, seed=0).forward(i), ref_rows,
                                      err_msg=name)
        np.testing.assert_array_equal(i, before)
    for name, a in _layouts(x).items():
        before = a.copy()
        d = Dropout(0.5, seed=1)
        np.testing.assert_array_equal(d.forward(a), ref_drop, err_msg=name)
        np.testing.assert_array_equal(a, before)


def test_fitted_models_give_identical_numbers_for_every_layout(fitted):
    clf, fc = fitted["classifier"], fitted["forecaster2"]
    ref_p = clf.predict_proba(XS)
    hist = np.c_[SERIES, np.cos(SERIES)]
    ref_f = fc.predict(hist, horizon=3)
    for name, a in _layouts(XS).items():
        np.testing.assert_array_equal(clf.predict_proba(a), ref_p, err_msg=name)
    for name, h in _layouts(hist).items():
        before = h.copy()
        np.testing.assert_array_equal(fc.predict(h, horizon=3), ref_f, err_msg=name)
        np.testing.assert_array_equal(h, before)


def test_an_empty_batch_first_input_is_named_in_the_callers_layout():
    """batch_first: (0, 5, 8) was reported as (5, 0, 8), the kernels' layout."""
    g = grucy.GRU(8, 4, batch_first=True)
    for shape in ((0, 5, 8), (2, 0, 8)):
        with pytest.raises(ValueError, match=rf"at least one step and one sequence, got "
                                             rf"\({shape[0]}, {shape[1]}, 8\)"):
            g(np.zeros(shape))
