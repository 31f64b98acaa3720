"""Programs that tests/test_distributed.py runs as child processes, alone or under mpirun.

``python distributed_worker.py collectives OUT``
    exercises every collective of the communicator and writes what each rank saw.
``python distributed_worker.py fail OUT``
    rank 1 raises while rank 0 waits in a collective.
``python distributed_worker.py forecast OUT [--epochs N] [--distributed auto|0|1]
[--seed S|none] [--dropout P] [--checkpoint PATH] [--checkpoint-every K] [--resume PATH]``
    trains a grucy.Forecaster on the sunspot numbers and writes its weights and history
    (``{rank}`` in the resume path is replaced by the rank).
``python distributed_worker.py models OUT [--distributed auto|0|1]``
    briefly trains a GRUClassifier, a GRURegressor and a CharLM; writes their weights.

Outputs are grucy archives (``OUT.rank<k>`` per rank), so the test compares numbers with
the same reader users have.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import grucy
from grucy.datasets import load_sunspots
from grucy.distributed import get_communicator
from grucy.io import write_archive
from grucy.losses import mse_loss
from grucy.nn import Linear
from grucy.training import ArrayTask, Trainer


def _write(out, comm, config, arrays):
    write_archive(f"{out}.rank{comm.rank}", "test-result",
                  dict(config, rank=comm.rank, size=comm.size), arrays)


def collectives(out):
    comm = get_communicator("auto")
    r = comm.rank
    results = {}
    # allreduce_sum_ of several arrays, float64 and float32, in place.
    for dt in (np.float64, np.float32):
        arrays = [np.full((2, 3), r + 1.0, dt), np.arange(5, dtype=dt) * (r + 1)]
        same = [arrays[0], arrays[1]]
        comm.allreduce_sum_(arrays)
        assert arrays[0] is same[0] and arrays[1] is same[1]
        results[f"sum_a_{np.dtype(dt).name}"] = arrays[0]
        results[f"sum_b_{np.dtype(dt).name}"] = arrays[1]
    # a second call with the same layout reuses the buffer; a different layout works too
    again = [np.full(4, 2.0 ** r)]
    comm.allreduce_sum_(again)
    results["sum_again"] = again[0]
    # broadcast_ of mixed dtypes, non-contiguous target included
    big = np.zeros((3, 4))
    bcast = [np.full(3, 10 + r, np.int64), np.full((2, 2), r + 0.25, np.float32),
             big[:, ::2]]
    bcast[2][...] = r + 0.5
    comm.broadcast_(bcast)
    results.update(bcast_int=bcast[0], bcast_f32=bcast[1], bcast_view=big)
    results["small_sum"] = comm.allreduce_sum([1.0, r, 0.5 * r])
    for n in (0, 1, 5, 8):
        results[f"shard_{n}"] = np.asarray(comm.shard(np.arange(n)), np.int64)
    # A new layout that differs between ranks: the same error on every rank, no hang.
    try:
        comm.allreduce_sum_([np.zeros(6 + r)])
        mismatch = "no error"
    except ValueError as exc:
        mismatch = str(exc)
    comm.barrier()
    _write(out, comm, {"mismatch": mismatch, "type": type(comm).__name__}, results)


def fail(out):
    """Rank 1 raises while rank 0 waits in a collective: the job must end, not hang."""
    comm = get_communicator("auto")
    if comm.rank == 1:
        raise RuntimeError("deliberate failure on rank 1")
    comm.allreduce_sum([1.0])
    _write(out, comm, {}, {})


def forecast(out, epochs=3, dtype="float64", distributed="auto", seed=0, dropout=0.0,
             checkpoint=None, checkpoint_every=1, resume=None):
    """Train a grucy.Forecaster on the yearly sunspot numbers (the shared loop).

    ``seed=None`` leaves ``random_state`` unset: every rank draws fresh entropy and the
    model must agree on rank 0's.
    """
    comm = get_communicator(distributed)
    _, values = load_sunspots()
    model = grucy.Forecaster(lookback=12, hidden_size=8, epochs=epochs, batch_size=32,
                             dropout=dropout, validation_fraction=0.2, dtype=dtype,
                             random_state=seed)
    if resume is not None:
        resume = resume.replace("{rank}", str(comm.rank))
    model.fit(values, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
              resume=resume, distributed=comm)
    arrays = {f"p{i}": p for i, p in enumerate(model.net_.parameters())}
    arrays.update({f"history_{k}": np.array(v) for k, v in model.history_.items()})
    config = {"type": type(comm).__name__, "epoch": model.n_epochs_}
    if seed is None:
        # The seeds a fresh run uses, per rank: the model's (split, initial weights) and
        # the loop's (shuffling); every rank must hold rank 0's.
        config["model_seed"] = model._seed_for_fit(None, None, comm)
        task = ArrayTask(Linear(1, 1), np.zeros((4, 1)), np.zeros((4, 1)), mse_loss,
                         np.arange(4))
        config["loop_rng"] = Trainer(task, epochs=1, seed=None,
                                     distributed=comm).rng.bit_generator.state
    _write(out, comm, config, arrays)


def models(out, distributed="auto"):
    """Fit GRUClassifier, GRURegressor and CharLM briefly (float64, validation on)."""
    comm = get_communicator(distributed)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 6, 2))
    y_class = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    y_reg = X[:, :, 1].mean(axis=1)
    text = "the quick brown fox jumps over the lazy dog. " * 12
    options = dict(hidden_size=6, epochs=3, dtype="float64", validation_fraction=0.2,
                   random_state=4)
    fitted = {
        "classifier": grucy.GRUClassifier(batch_size=16, **options).fit(
            X, y_class, distributed=comm),
        "regressor": grucy.GRURegressor(batch_size=16, **options).fit(
            X, y_reg, distributed=comm),
        "charlm": grucy.CharLM(embedding_dim=4, bptt=8, batch_size=5, **options).fit(
            text, distributed=comm),
    }
    arrays = {}
    for name, model in fitted.items():
        arrays.update({f"{name}/p{i}": p for i, p in enumerate(model.net_.parameters())})
        arrays.update({f"{name}/history_{k}": np.array(v)
                       for k, v in model.history_.items()})
    _write(out, comm, {"type": type(comm).__name__}, arrays)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("program", choices=["collectives", "fail", "forecast", "models"])
    parser.add_argument("out")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--distributed", default="auto", choices=["auto", "0", "1"])
    parser.add_argument("--seed", default="0", help="an int, or 'none'")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--checkpoint")
    parser.add_argument("--checkpoint-every", type=int, default=1)
    parser.add_argument("--resume")
    args = parser.parse_args(argv)
    if args.program == "collectives":
        collectives(args.out)
    elif args.program == "fail":
        fail(args.out)
    elif args.program == "models":
        models(args.out, {"auto": "auto", "0": False, "1": True}[args.distributed])
    else:
        forecast(args.out, epochs=args.epochs, dtype=args.dtype,
                 distributed={"auto": "auto", "0": False, "1": True}[args.distributed],
                 seed=None if args.seed == "none" else int(args.seed),
                 dropout=args.dropout, checkpoint=args.checkpoint,
                 checkpoint_every=args.checkpoint_every, resume=args.resume)


if __name__ == "__main__":
    sys.exit(main())
