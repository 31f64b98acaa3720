"""Programs that tests/test_distributed.py runs as child processes, alone or under mpirun.

``python distributed_worker.py collectives OUT``
    exercises every collective of the communicator and writes what each rank saw.
``python distributed_worker.py fail OUT``
    rank 1 raises while rank 0 waits in a collective.
``python distributed_worker.py train OUT [--epochs N] [--dtype D] [--distributed auto|0]``
    a minimal data-parallel training loop (GRU + Linear + Adam, sunspot windows) written
    against the communicator contract only, and writes the final weights.

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
from grucy.nn import Linear
from grucy.optim import Adam, clip_grad_norm


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


def train(out, epochs=3, dtype="float64", distributed="auto", batch_size=32, hidden=8,
          lookback=12, seed=0):
    """Data-parallel training of GRU(1->hidden) + Linear(hidden->1), one-step forecasts.

    Exactly what the contract asks of the shared loop: broadcast the initial weights,
    shuffle with the same seed on every rank, take this rank's shard of every global
    mini-batch, scale by the global count, one allreduce of all gradients per step, and
    reduce the epoch loss.
    """
    comm = get_communicator(distributed)
    dtype = np.dtype(dtype)
    _, values = load_sunspots()
    series = (values - values.mean()) / values.std()
    X, y = sliding_windows(series, lookback)
    X = X.astype(dtype)
    y = y.astype(dtype)
    n = len(y)
    # Different seeds per rank on purpose: the broadcast must make the start identical.
    gru = grucy.GRU(1, hidden, dtype=dtype, seed=seed + 1000 * comm.rank)
    head = Linear(hidden, 1, dtype=dtype, seed=seed + 1 + 1000 * comm.rank)
    params = gru.parameters() + head.parameters()
    grads = list(gru.grads.values()) + list(head.grads.values())
    comm.broadcast_(params)
    opt = Adam(params, grads, lr=3e-3)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(n)
        loss_sum = 0.0
        for start in range(0, n, batch_size):
            local = comm.shard(order[start:start + batch_size])
            (count,) = comm.allreduce_sum([len(local)])
            opt.zero_grad()
            if len(local):
                x = np.ascontiguousarray(X[local].T[:, :, None])  # (T, B, 1)
                _, h_n = gru.forward(x, training=True)
                pred = head.forward(h_n[0], training=True)[:, 0]
                diff = pred - y[local]
                loss_sum += float(np.sum(np.square(diff, dtype=np.float64)))
                dh = head.backward((2.0 / count) * diff[:, None])
                gru.backward(np.zeros((lookback, len(local), hidden), dtype), dh[None])
            comm.allreduce_sum_(grads)
            clip_grad_norm(grads, 1.0)
            opt.step()
        (total,) = comm.allreduce_sum([loss_sum])
        losses.append(total / n)
    arrays = {f"p{i}": p for i, p in enumerate(params)}
    arrays["losses"] = np.array(losses)
    _write(out, comm, {"type": type(comm).__name__}, arrays)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("program", choices=["collectives", "fail", "train"])
    parser.add_argument("out")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--distributed", default="auto", choices=["auto", "0", "1"])
    args = parser.parse_args(argv)
    if args.program == "collectives":
        collectives(args.out)
    elif args.program == "fail":
        fail(args.out)
    else:
        distributed = {"auto": "auto", "0": False, "1": True}[args.distributed]
        train(args.out, epochs=args.epochs, dtype=args.dtype, distributed=distributed)


if __name__ == "__main__":
    sys.exit(main())
