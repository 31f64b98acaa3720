"""The shared training loop: equal to a hand-written loop, reproducible, early stopping,
schedules, progress output, exact resume from checkpoints, and the data-parallel contract
(simulated with two threads and an in-process communicator)."""

import os
import sys
import threading

import numpy as np
import pytest

from grucy import io
from grucy.losses import mse_loss
from grucy.nn import Dropout, Linear, Sequential
from grucy.optim import Adam, clip_grad_norm
from grucy.training import ArrayTask, Trainer, TrainingDivergedError, read_checkpoint, train
from grucy.training.progress import _Progress

from conftest import importorskip


def make_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    w = rng.normal(size=(4, 2))
    Y = X @ w + 0.1 * rng.normal(size=(n, 2))
    return X, Y


def make_task(X, Y, *, dropout=0.0, n_val=20, seed=1, dtype=np.float64):
    net = Sequential(Linear(4, 8, dtype=dtype, seed=seed), Dropout(dropout, seed=seed + 1),
                     Linear(8, 2, dtype=dtype, seed=seed + 2))
    n = len(X)
    metrics = {"rmse": lambda out, y: (float(np.sum((out - y) ** 2)), float(y.size))}
    return ArrayTask(net, X.astype(dtype), Y.astype(dtype), mse_loss,
                     np.arange(n - n_val), np.arange(n - n_val, n), metrics=metrics)


def weights(task):
    return [p.copy() for p in task.parameters()]


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# -- the loop is ordinary training ------------------------------------------------------
def test_loop_equals_a_hand_written_loop_bit_for_bit():
    X, Y = make_data()
    task = make_task(X, Y, n_val=0)
    ref = make_task(X, Y, n_val=0)
    hist = train(task, epochs=3, batch_size=16, lr=0.01, max_grad_norm=0.5, seed=5).history
    # the same thing written out by hand
    net = ref.net
    opt = Adam(net.parameters(), list(net.grads.values()), lr=0.01)
    rng = np.random.default_rng(5)
    losses = []
    for _ in range(3):
        order = np.arange(len(X))[rng.permutation(len(X))]
        total = 0.0
        for s in range(0, len(X), 16):
            idx = order[s:s + 16]
            net.zero_grad()
            loss, dout = mse_loss(net.forward(ref.X[idx]), ref.Y[idx],
                                  normalizer=float(idx.size * 2))
            net.backward(dout)
            clip_grad_norm(opt.grads, 0.5)
            opt.step()
            total += loss * idx.size * 2
        losses.append(total / (len(X) * 2))
    assert_same_weights(weights(task), weights(ref))
    assert hist["loss"] == losses
    assert hist["lr"] == [0.01] * 3


def test_reproducible_from_seed_and_learns():
    X, Y = make_data()
    runs = []
    for seed in (3, 3, 4):
        task = make_task(X, Y, dropout=0.2)
        hist = train(task, epochs=5, batch_size=16, lr=0.02, seed=seed).history
        runs.append((weights(task), hist))
    assert_same_weights(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert not np.array_equal(runs[0][0][0], runs[2][0][0])
    hist = runs[0][1]
    assert set(hist) == {"loss", "val_loss", "val_rmse", "lr"}
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert hist["val_rmse"][-1] == pytest.approx(np.sqrt(hist["val_loss"][-1]))


def test_early_stopping_restores_the_best_weights():
    X, Y = make_data()
    task = make_task(X, Y)
    # a huge learning rate makes the validation loss bounce, so stopping triggers
    trainer = train(task, epochs=60, batch_size=16, lr=0.3, optimizer="sgd",
                    patience=3, seed=0)
    hist = trainer.history
    assert len(hist["loss"]) < 60 and trainer.stopped
    best = int(np.argmin(hist["val_loss"]))
    assert trainer.best_epoch == best + 1
    assert len(hist["val_loss"]) == best + 1 + 3  # stopped after `patience` bad epochs
    val = task.metrics(task.evaluate(task.val_idx, None))
    assert val["loss"] == pytest.approx(hist["val_loss"][best], rel=1e-12)


def test_schedules_drive_the_learning_rate():
    X, Y = make_data()
    hist = train(make_task(X, Y), epochs=6, lr=0.1, schedule="step", seed=0).history
    np.testing.assert_allclose(hist["lr"], [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    hist = train(make_task(X, Y), epochs=4, lr=0.1, schedule="cosine", seed=0).history
    np.testing.assert_allclose(hist["lr"], 0.05 * (1 + np.cos(np.pi * np.arange(4) / 4)))
    # "improving" needs a 50% drop per epoch here, so the rate halves once progress slows
    hist = train(make_task(X, Y), epochs=8, lr=0.05, optimizer="sgd", seed=0,
                 schedule=("plateau", {"patience": 0, "factor": 0.5,
                                       "threshold": 0.5})).history
    assert np.all(np.isfinite(hist["loss"]))
    ratios = np.array(hist["lr"][1:]) / np.array(hist["lr"][:-1])
    assert set(ratios) <= {1.0, 0.5} and 0.5 in ratios and hist["lr"][0] == 0.05
    with pytest.raises(ValueError, match="schedule"):
        Trainer(make_task(X, Y), epochs=2, schedule="linear")


def test_verbose_zero_is_silent_and_verbose_shows_metrics(capsys):
    # with or without tqdm: verbose=2 names the run and shows the validation metrics
    X, Y = make_data()
    train(make_task(X, Y), epochs=2, seed=0, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    train(make_task(X, Y), epochs=2, seed=0, verbose=2, description="fitting")
    err = capsys.readouterr().err
    assert "fitting" in err and "val_loss" in err and "val_rmse" in err


def _without_tqdm(monkeypatch):
    for name in ("tqdm", "tqdm.auto"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it fails


def _epoch_lines(err):
    return [line for line in err.splitlines() if line.startswith("fitting: epoch ")]


def test_without_tqdm_verbose_1_prints_at_most_one_line_per_epoch(capsys, monkeypatch):
    _without_tqdm(monkeypatch)
    X, Y = make_data()
    # a quick run (all 30 epochs within the interval): the first and the last epoch only
    monkeypatch.setattr(_Progress, "LINE_INTERVAL", 1e9)
    train(make_task(X, Y), epochs=30, seed=0, verbose=1, description="fitting")
    captured = capsys.readouterr()
    lines = _epoch_lines(captured.err)
    assert captured.out == "" and len(captured.err.splitlines()) == 2
    assert lines[0].startswith("fitting: epoch 1/30  loss ") and "val_rmse" in lines[0]
    assert lines[1].startswith("fitting: epoch 30/30  loss ")
    # slow epochs (each longer than the interval): one line each, never more
    monkeypatch.setattr(_Progress, "LINE_INTERVAL", 0.0)
    train(make_task(X, Y), epochs=5, seed=0, verbose=1, description="fitting")
    lines = _epoch_lines(capsys.readouterr().err)
    assert [line.split()[2] for line in lines] == [f"{e}/5" for e in range(1, 6)]
    # verbose=2 asks for every epoch
    monkeypatch.setattr(_Progress, "LINE_INTERVAL", 1e9)
    train(make_task(X, Y), epochs=5, seed=0, verbose=2, description="fitting")
    assert len(_epoch_lines(capsys.readouterr().err)) == 5


class _RecordingBar:
    """Stands in for tqdm.auto.tqdm: records the position at every update and postfix."""

    made = []

    def __init__(self, total=None, initial=0, unit=None, **kwargs):
        self.total, self.n, self.unit = total, initial, unit
        self.events = []
        _RecordingBar.made.append(self)

    def update(self, n=1):
        self.n += n
        self.events.append(("update", self.n))

    def set_postfix(self, values, refresh=True):
        self.events.append(("epoch", self.n, dict(values)))

    def write(self, line):
        self.events.append(("write", line))

    def close(self):
        self.events.append(("close",))


def test_the_progress_bar_moves_with_every_batch(monkeypatch):
    importorskip("tqdm")
    import tqdm.auto as tqdm_auto

    X, Y = make_data()  # 100 training examples: 7 batches of 16 per epoch
    _RecordingBar.made.clear()
    monkeypatch.setattr(tqdm_auto, "tqdm", _RecordingBar)
    train(make_task(X, Y), epochs=3, batch_size=16, seed=0, verbose=1)
    (bar,) = _RecordingBar.made
    assert bar.unit == "batch" and bar.total == 3 * 7
    epochs = [e for e in bar.events if e[0] == "epoch"]
    updates = [e for e in bar.events if e[0] == "update"]
    assert [e[1] for e in updates] == list(range(1, 22))  # one step per batch
    assert [e[1] for e in epochs] == [7, 14, 21]  # moved within each epoch first
    assert epochs[-1][2]["epoch"] == "3/3" and "val_loss" in epochs[-1][2]
    assert bar.events[-1] == ("close",)


def test_a_char_lm_epoch_moves_the_bar_per_bptt_chunk(monkeypatch):
    importorskip("tqdm")
    import tqdm.auto as tqdm_auto

    import grucy

    _RecordingBar.made.clear()
    monkeypatch.setattr(tqdm_auto, "tqdm", _RecordingBar)
    text = "the quick brown fox jumps over the lazy dog. " * 40
    grucy.CharLM(hidden_size=8, embedding_dim=4, bptt=10, batch_size=4, epochs=2,
                 random_state=0, verbose=1).fit(text)
    (bar,) = _RecordingBar.made
    per_epoch = bar.total // 2
    assert bar.unit == "batch" and per_epoch > 5
    assert [e[1] for e in bar.events if e[0] == "epoch"] == [per_epoch, 2 * per_epoch]
    assert sum(e[0] == "update" for e in bar.events) == 2 * per_epoch


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_non_finite_gradient_stops_training_and_restores_the_weights():
    X, Y = make_data()
    task = make_task(X, Y)
    # The layers refuse non-finite inputs and raise on overflow, so poison the
    # gradients themselves: what a sum over processes that overflowed would give.
    backward = task.net.backward
    calls = {"n": 0}

    def poisoned_backward(dy):
        out = backward(dy)
        calls["n"] += 1
        if calls["n"] == 3:
            next(iter(task.net.grads.values())).flat[0] = np.inf
        return out

    task.net.backward = poisoned_backward
    start = [p.copy() for p in task.parameters()]
    with pytest.raises(TrainingDivergedError, match="diverged in epoch 1, after 2 "
                                                    "optimizer steps: the gradient of "
                                                    "'0.weight' is not finite"):
        train(task, epochs=1, batch_size=8, max_grad_norm=1.0, seed=0)
    for p, s in zip(task.parameters(), start):
        np.testing.assert_array_equal(p, s)


# -- checkpoints and resume ---------------------------------------------------------------
OPTIONS = dict(batch_size=16, lr=0.02, optimizer="adamw", schedule="plateau",
               max_grad_norm=1.0, patience=10)


def test_resume_from_epoch_k_is_bit_identical(tmp_path):
    X, Y = make_data()
    full = make_task(X, Y, dropout=0.3)
    ckpt = tmp_path / "run-{epoch}.grucy"
    t_full = train(full, epochs=4, seed=7, checkpoint=ckpt, checkpoint_every=1, **OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"run-{e}.grucy" for e in (1, 2, 3, 4)]
    # a "killed" run: a fresh model and optimiser continue from the end of epoch 2
    resumed = make_task(X, Y, dropout=0.3, seed=99)  # other initial weights: overwritten
    t_res = train(resumed, epochs=4, seed=12345, resume=tmp_path / "run-2.grucy", **OPTIONS)
    assert_same_weights(weights(full), weights(resumed))
    assert t_res.history == t_full.history
    assert t_res.step == t_full.step and t_res.epoch == 4
    for a, b in zip(t_full.optimizer.exp_avg_sq, t_res.optimizer.exp_avg_sq):
        np.testing.assert_array_equal(a, b)
    assert t_res.rng.bit_generator.state == t_full.rng.bit_generator.state


def test_two_epochs_then_resume_to_four_equals_four(tmp_path):
    X, Y = make_data()
    opts = dict(batch_size=16, lr=0.02, max_grad_norm=1.0)
    four = make_task(X, Y, dropout=0.2)
    train(four, epochs=4, seed=1, checkpoint=tmp_path / "a.grucy", **opts)
    two = make_task(X, Y, dropout=0.2)
    train(two, epochs=2, seed=1, checkpoint=tmp_path / "b.grucy", **opts)
    assert not all(np.array_equal(a, b) for a, b in zip(weights(two), weights(four)))
    again = make_task(X, Y, dropout=0.2)
    train(again, epochs=4, seed=1, resume=tmp_path / "b.grucy",
          checkpoint=tmp_path / "b.grucy", **opts)
    assert_same_weights(weights(again), weights(four))
    config, arrays = read_checkpoint(tmp_path / "b.grucy")
    assert config["epoch"] == 4 and config["history"]["loss"] == \
        read_checkpoint(tmp_path / "a.grucy")[0]["history"]["loss"]


def test_resume_refuses_other_data_model_or_file(tmp_path):
    X, Y = make_data()
    path = tmp_path / "c.grucy"
    train(make_task(X, Y), epochs=1, seed=0, checkpoint=path)
    X2 = X.copy()
    X2[0, 0] += 1
    with pytest.raises(ValueError, match="other data"):
        train(make_task(X2, Y), epochs=2, seed=0, resume=path)
    net = Sequential(Linear(4, 3, dtype=np.float64), Linear(3, 2, dtype=np.float64))
    other = ArrayTask(net, X, Y, mse_loss, np.arange(100))
    with pytest.raises(ValueError, match="parameter shapes"):
        train(other, epochs=2, resume=path)
    io.write_archive(tmp_path / "m.grucy", "grucy.GRU", {}, {})
    with pytest.raises(io.FileFormatError, match="expected a 'grucy.checkpoint'"):
        train(make_task(X, Y), epochs=2, resume=tmp_path / "m.grucy")


def test_resume_refuses_other_options_in_the_metadata(tmp_path):
    X, Y = make_data()
    path = tmp_path / "o.grucy"
    meta = {"model": "m", "options": {"loss": "mse", "quantiles": (0.1, 0.9)}}
    train(make_task(X, Y), epochs=1, seed=0, checkpoint=path, metadata=meta)
    other = {"model": "m", "options": {"loss": "mae", "quantiles": (0.1, 0.9)}}
    with pytest.raises(io.FileFormatError, match=r"other options .*: loss='mse' in the "
                                                 r"checkpoint, 'mae' now$"):
        train(make_task(X, Y), epochs=2, seed=0, resume=path, metadata=other)
    # equal options (a tuple is the list the checkpoint holds) resume; options only one
    # side holds (another version's) and runs without options are not compared
    more = {"model": "m", "options": {"loss": "mse", "quantiles": [0.1, 0.9], "new": 1}}
    assert train(make_task(X, Y), epochs=2, seed=0, resume=path,
                 metadata=more).epoch == 2
    assert train(make_task(X, Y), epochs=2, seed=0, resume=path).epoch == 2


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_max_grad_norm_must_be_finite(bad):
    X, Y = make_data()
    # (inf used to pass and fail inside the first step: "max_norm must be finite")
    with pytest.raises(ValueError, match=r"max_grad_norm must be None or > 0, got "
                                         r"(inf|nan) \(a finite norm"):
        Trainer(make_task(X, Y), epochs=1, max_grad_norm=bad)


# -- the data-parallel contract -----------------------------------------------------------
class ThreadComm:
    """An in-process communicator for N threads (the interface of grucy.distributed)."""

    def __init__(self, rank, shared):
        self.rank, self.size, self.shared = rank, shared["size"], shared
        self.is_root = rank == 0
        self.calls = []

    def _exchange(self, value):
        sh = self.shared
        sh["slots"][self.rank] = value
        sh["barrier"].wait()
        values = list(sh["slots"])
        sh["barrier"].wait()
        return values

    def broadcast_(self, arrays):
        self.calls.append("broadcast_")
        root = self._exchange([a.copy() for a in arrays])[0]
        for a, r in zip(arrays, root):
            a[...] = r
        return arrays

    def allreduce_sum_(self, arrays):
        self.calls.append("allreduce_sum_")
        flat = np.concatenate([a.ravel() for a in arrays])  # one flat buffer
        total = sum(self._exchange(flat))  # rank order: deterministic
        offset = 0
        for a in arrays:
            a[...] = total[offset:offset + a.size].reshape(a.shape)
            offset += a.size
        return arrays

    def allreduce_sum(self, values):
        self.calls.append("allreduce_sum")
        return sum(self._exchange(np.array(values, dtype=np.float64)))

    def shard(self, indices):
        return np.array_split(indices, self.size)[self.rank]


def test_two_simulated_ranks_match_one_process(tmp_path):
    X, Y = make_data(n=110)
    opts = dict(epochs=3, batch_size=16, lr=0.02, max_grad_norm=1.0, schedule="plateau",
                patience=5, seed=3)
    single = make_task(X, Y)
    t_single = train(single, **opts)

    shared = {"size": 2, "slots": [None, None], "barrier": threading.Barrier(2)}
    comms = [ThreadComm(r, shared) for r in range(2)]
    tasks = [make_task(X, Y, seed=1 + 10 * r) for r in range(2)]  # different init weights
    results, errors = {}, []

    def run(r):
        try:
            ck = tmp_path / f"rank{r}.grucy"
            results[r] = train(tasks[r], distributed=comms[r], checkpoint=ck, **opts)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            shared["barrier"].abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for r in range(2):  # identical on both ranks, and equal to one process up to rounding
        for a, b in zip(weights(tasks[r]), weights(single)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        for k, v in t_single.history.items():
            np.testing.assert_allclose(results[r].history[k], v, rtol=1e-10)
    assert_same_weights(weights(tasks[0]), weights(tasks[1]))
    # the documented call pattern, and checkpoints from the root only
    calls = comms[1].calls
    assert calls[0] == "broadcast_"
    steps = results[1].step
    assert calls.count("allreduce_sum_") == steps  # one gradient reduction per step
    assert [p.name for p in tmp_path.iterdir()] == ["rank0.grucy"]


def _run_ranks(size, fit_one):
    """fit_one(comm) on `size` threads with ThreadComm; returns the results by rank."""
    shared = {"size": size, "slots": [None] * size, "barrier": threading.Barrier(size)}
    results, errors = {}, []

    def run(r):
        try:
            results[r] = fit_one(ThreadComm(r, shared))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            shared["barrier"].abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


@pytest.mark.parametrize("kind", ["classifier", "lm"])
def test_models_on_two_simulated_ranks_match_one_process(kind):
    import grucy

    rng = np.random.default_rng(0)
    if kind == "classifier":
        X = rng.normal(size=(90, 6, 2))
        data = (X, (X[:, :, 0].sum(1) > 0).astype(int))

        def make():
            return grucy.GRUClassifier(hidden_size=6, num_layers=2, epochs=3,
                                       batch_size=20, validation_fraction=0.2,
                                       dtype="float64", random_state=5)
    else:
        data = ("the cat sat on the mat; the dog sat on the log. " * 30,)

        def make():  # 6 streams: 3 per rank
            return grucy.CharLM(hidden_size=8, embedding_dim=4, bptt=9, batch_size=6,
                                epochs=2, dtype="float64", random_state=5)

    single = make().fit(*data, distributed=False)
    ranks = _run_ranks(2, lambda comm: make().fit(*data, distributed=comm))
    for r, model in ranks.items():
        for (name, a), (_, b) in zip(model.net_.named_parameters(),
                                     single.net_.named_parameters()):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)
        for k, v in single.history_.items():
            np.testing.assert_allclose(model.history_[k], v, rtol=1e-10, err_msg=k)


def test_packed_from_padded_checks_lengths():
    """Lengths past T were blamed on "offsets", a wrong count was a raw IndexError, and
    fractional lengths were truncated."""
    from grucy.training import Packed

    padded = np.arange(6.0).reshape(2, 3, 1)
    for lengths, error, message in [
            ([4, 1], ValueError, r"^lengths must lie in \[1, T=3\], got min 1, max 4"),
            ([0, 1], ValueError, r"^lengths must lie in \[1, T=3\]"),
            ([1, 1, 1], ValueError, r"^lengths must have shape \(B,\) = \(2,\), got \(3,\)"),
            ([[1, 1]], ValueError, r"^lengths must have shape"),
            ([2.5, 1], TypeError, r"^lengths must be integers")]:
        with pytest.raises(error, match=message):
            Packed.from_padded(padded, lengths)
    with pytest.raises(ValueError, match=r"^padded must be \(n, T, \.\.\.\), at least 2-D"):
        Packed.from_padded(np.zeros(3), [1])
    p = Packed.from_padded(padded, [2, 3.0])
    assert p.lengths.tolist() == [2, 3] and p.values.ravel().tolist() == [0, 1, 3, 4, 5]
    assert len(Packed.from_padded(np.zeros((0, 3, 1)), [])) == 0


def test_a_schedule_state_refused_on_resume_leaves_the_optimizer_as_it_was(tmp_path):
    # The optimizer's state is restored before the schedule's; when the schedule then
    # refuses, the optimizer goes back ("everything is checked before anything changes").
    X, Y = make_data()
    path = tmp_path / "s.grucy"
    t = Trainer(make_task(X, Y), epochs=2, schedule="step", seed=0, checkpoint=path)
    t.fit()
    fresh = Trainer(make_task(X, Y), epochs=3, schedule="step", seed=0)
    fresh.optimizer.step()   # some state of its own to keep
    before = fresh.optimizer.state_dict()

    def refuse(state):
        raise ValueError("schedule state refused")
    fresh.schedule.load_state_dict = refuse
    with pytest.raises(ValueError, match="schedule state refused"):
        fresh.load_checkpoint(path)
    after = fresh.optimizer.state_dict()
    assert after.keys() == before.keys()
    for key in before:
        assert str(after[key]) == str(before[key]), key


# -- a researcher's own nets (found by exploratory testing) ------------------------------
class _ExpNet:
    """exp(|Linear|), whose output overflows from the 5th call while ``explode``."""

    def __init__(self, explode=False):
        self.lin = Linear(3, 1, dtype=np.float64, seed=0)
        self.grads = self.lin.grads
        self.explode, self.calls = explode, 0

    def parameters(self):
        return self.lin.parameters()

    def generators(self):
        return []

    def forward(self, X, training=True):
        self.calls += 1
        self._scale = 1e4 if self.explode and self.calls > 4 else 1.0
        self._z = self.lin.forward(X[:, -1], training=training)
        with np.errstate(over="ignore"):
            self._y = np.exp(np.abs(self._z) * self._scale)
        return self._y

    def backward(self, dout):
        self.lin.backward(dout * self._y * np.sign(self._z) * self._scale)


def test_a_custom_nets_overflowing_output_is_a_divergence_and_rewinds_the_whole_run():
    """The loss's 'pred contains NaN or inf' ValueError escaped with the steps applied;
    and a divergence rewound only the parameters (a second fit went on from the failed
    epoch with its Adam moments, history and best weights)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 4, 3))
    Y = rng.standard_normal((12, 1))
    net = _ExpNet(explode=True)
    start = [p.copy() for p in net.parameters()]
    task = ArrayTask(net, X, Y, mse_loss, train_idx=np.arange(8), val_idx=np.arange(8, 12))
    tr = Trainer(task, epochs=6, batch_size=3, lr=0.05, patience=5, distributed=False,
                 max_grad_norm=None, seed=0)
    fresh = tr.optimizer.state_dict()
    with pytest.raises(TrainingDivergedError, match="the network's output overflowed"):
        tr.fit()
    assert all(np.array_equal(a, b) for a, b in zip(start, net.parameters()))
    assert (tr.epoch, tr.step, tr.best_params, tr.history) == (0, 0, None,
                                                               {"loss": [], "lr": []})
    state = tr.optimizer.state_dict()
    assert state["step"] == fresh["step"] == 0
    assert not any(a.any() for a in state["exp_avg"])  # (Adam's moments back to 0)
    # fit again with a lower rate: exactly a fresh run at that rate
    net.explode = False
    tr.optimizer.lr = 1e-3
    again = tr.fit()
    net2 = _ExpNet()
    task2 = ArrayTask(net2, X, Y, mse_loss, train_idx=np.arange(8), val_idx=np.arange(8, 12))
    want = Trainer(task2, epochs=6, batch_size=3, lr=1e-3, patience=5, distributed=False,
                   max_grad_norm=None, seed=0).fit()
    assert again == want


def test_tasks_refuse_what_failed_only_mid_run():
    from grucy.training import Packed, SequenceTask
    rng = np.random.default_rng(0)
    net = Sequential(Linear(3, 1, dtype=np.float64, seed=0))
    X, Y = rng.standard_normal((6, 3)), rng.standard_normal((6, 1))
    mae = lambda out, y: (float(np.abs(out - y).sum()), float(y.size))  # noqa: E731
    with pytest.raises(ValueError, match='metrics may not be named "loss"'):
        ArrayTask(net, X, Y, mse_loss, [0, 1, 2, 3], [4, 5], metrics={"loss": mae})
    seqs = Packed.from_list([rng.standard_normal((n, 2)) for n in (3, 0, 2)])
    with pytest.raises(ValueError, match="X's sequence 1 has no steps"):
        SequenceTask(net, seqs, np.zeros((3, 1)), mse_loss, [0, 1, 2])

    class NoGenerators:
        def __init__(self):
            self.lin = Linear(3, 1, dtype=np.float64, seed=0)
            self.grads = self.lin.grads

        def parameters(self):
            return self.lin.parameters()

        def forward(self, X, training=True):
            return self.lin.forward(X, training=training)

        def backward(self, dout):
            self.lin.backward(dout)

    task = ArrayTask(NoGenerators(), X, Y, mse_loss, [0, 1, 2, 3, 4, 5])
    tr = Trainer(task, epochs=2, checkpoint=os.path.join(os.getcwd(), "never.ckpt"),
                 distributed=False)
    with pytest.raises(TypeError, match=r"checkpoints need the net's generators\(\)"):
        tr.fit()  # (a bare AttributeError after the first epoch)
    assert tr.epoch == 0


def test_a_negative_min_delta_is_refused():
    # it let a worse epoch count as an improvement (and restored it as the best)
    task = ArrayTask(Sequential(Linear(3, 1, dtype=np.float64, seed=0)), np.ones((4, 3)),
                     np.ones((4, 1)), mse_loss, [0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"min_delta must be >= 0 .*got -0.5"):
        Trainer(task, epochs=2, patience=1, min_delta=-0.5, distributed=False)
