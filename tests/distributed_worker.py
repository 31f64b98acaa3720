"""Programs that tests/test_distributed.py runs as child processes, alone or under mpirun.

``python distributed_worker.py collectives OUT``
    exercises every collective of the communicator and writes what each rank saw.
``python distributed_worker.py fail OUT``
    rank 1 raises while rank 0 waits in a collective.
``python distributed_worker.py fit OUT [--epochs N] [--distributed auto|0|1] [--dropout P]
[--checkpoint PATH] [--checkpoint-every K] [--resume PATH]``
    trains GRU + Linear on sunspot windows with the shared loop (grucy.training) and
    writes the final weights and history.

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
from grucy.forecast import sliding_windows
from grucy.io import write_archive
from grucy.losses import mse_loss
from grucy.nn import Dropout, Linear
from grucy.training import ArrayTask, train


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
    bcast = [np.full(3, 10 + r, np.int64), np.full((2, 2), r + 0.25, np.float32), big[:, ::2]]
    bcast[2][...] = r + 0.5
    comm.broadcast_(bcast)
    results["bcast_int"], results["bcast_f32"], results["bcast_view"] = bcast[0], bcast[1], big
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


class _LastState:
    """GRU(1 -> hidden) read at its last step, then Linear(hidden -> 1): (B, T) -> (B, 1).

    The network interface :class:`grucy.training.ArrayTask` expects.
    """

    def __init__(self, hidden, dtype, seed, dropout=0.0):
        self.gru = grucy.GRU(1, hidden, batch_first=True, dtype=dtype, seed=seed)
        self.drop = Dropout(dropout, seed=seed + 1)
        self.head = Linear(hidden, 1, dtype=dtype, seed=seed + 2)
        self.grads = {f"gru.{k}": g for k, g in self.gru.grads.items()}
        self.grads.update({f"head.{k}": g for k, g in self.head.grads.items()})

    def parameters(self):
        return self.gru.parameters() + self.head.parameters()

    def generators(self):
        return self.drop.generators()

    def forward(self, X, training=True):
        self._shape = X.shape + (self.gru.hidden_size,)
        _, h_n = self.gru.forward(X[:, :, None], training=training)
        return self.head.forward(self.drop.forward(h_n[-1], training), training)

    def backward(self, dout):
        dh = self.drop.backward(self.head.backward(dout))
        self.gru.backward(np.zeros(self._shape, self.gru.dtype), dh[None])


def fit(out, epochs=3, dtype="float64", distributed="auto", batch_size=32, hidden=8,
        lookback=12, seed=0, dropout=0.0, checkpoint=None, checkpoint_every=1,
        resume=None):
    """Train GRU + Linear one-step sunspot forecasts with the shared loop (Trainer).

    The initial weights differ between ranks on purpose: the loop's broadcast must make
    them identical.  The last 20% of the windows are the validation set.
    """
    comm = get_communicator(distributed)
    dtype = np.dtype(dtype)
    _, values = load_sunspots()
    X, y = sliding_windows((values - values.mean()) / values.std(), lookback)
    n_train = int(0.8 * len(y))
    net = _LastState(hidden, dtype, seed + 1000 * comm.rank, dropout)
    task = ArrayTask(net, X.astype(dtype), y[:, None].astype(dtype), mse_loss,
                     np.arange(n_train), np.arange(n_train, len(y)))
    trainer = train(task, epochs=epochs, batch_size=batch_size, lr=3e-3,
                    max_grad_norm=1.0, seed=seed, distributed=comm,
                    checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                    resume=resume)
    arrays = {f"p{i}": p for i, p in enumerate(task.parameters())}
    arrays.update({f"history_{k}": np.array(v) for k, v in trainer.history.items()})
    _write(out, comm, {"type": type(comm).__name__, "epoch": trainer.epoch}, arrays)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("program", choices=["collectives", "fail", "fit"])
    parser.add_argument("out")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--distributed", default="auto", choices=["auto", "0", "1"])
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--checkpoint")
    parser.add_argument("--checkpoint-every", type=int, default=1)
    parser.add_argument("--resume")
    args = parser.parse_args(argv)
    if args.program == "collectives":
        collectives(args.out)
    elif args.program == "fail":
        fail(args.out)
    else:
        distributed = {"auto": "auto", "0": False, "1": True}[args.distributed]
        fit(args.out, epochs=args.epochs, dtype=args.dtype, distributed=distributed,
            dropout=args.dropout, checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every, resume=args.resume)


if __name__ == "__main__":
    sys.exit(main())
