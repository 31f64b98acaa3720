#!/usr/bin/env python
"""The many-core run: everything issue 13 measures on a large machine, in one command.

For a lent machine where one prepared command runs and its files come back::

    python3 setup.py build_ext --inplace && export PYTHONPATH=src
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_cores.py --out DIR

It writes DIR/cores.json (and the sweep's own bench_gru.json and sweep.md; DIR defaults
to bench/results/cores) with:

1. the machine: CPU, cores, L2, kernels, the FMA and SGEMM peaks;
2. the thread sweep of bench_gru.py (grucy, PyTorch, ONNX Runtime at 1, 2, 4, ...
   threads, training and inference, in one process on the same weights);
3. grucy's recurrence split forced into other (row groups x unit chunks) plans at the
   largest count, next to the plan the cost model picks;
4. the same training step data-parallel over MPI, ranks x threads covering the machine
   (each rank B/p sequences, one Allreduce of the gradients per step), the target grucy's
   threads must beat;
5. whether a thread count leaves a lasting cost: 1x100x32x64 at 2 threads in a fresh
   process, and after calls at the largest count;
6. bit-identical results across thread counts on this machine, each GEMM kernel the CPU
   runs (GRUCY_ISA) on the middle shape, and the targets.

Nothing here estimates: a figure is measured in this run or reported missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # the helper modules beside this file, when imported from elsewhere
    sys.path.insert(0, HERE)

from _bench_args import (checked_default, output_dir, positive_float,  # noqa: E402
                         positive_int, shape_list, subset)

DEFAULT_OUT = os.path.join(HERE, "results", "cores")  # git-ignored, as bench/results/ is
STEPS = ("sweep", "plans", "mpi", "isas", "lasting", "identical")
SHAPES = ((256, 50, 256, 512), (64, 50, 256, 512), (1, 100, 32, 64))
PLANS = ((0, 0), (16, 1), (8, 2), (4, 4), (2, 8))


def log(msg):
    print(msg, flush=True)


def label(shape):
    return "x".join(str(v) for v in shape)


def time_min(fn, seconds, min_repeats=3):
    fn()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < min_repeats:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"ms_min": 1e3 * min(times), "ms_median": 1e3 * statistics.median(times),
            "repeats": len(times)}


def make_step(grucy, shape, mode, seed=0):
    import numpy as np
    B, T, I, H = shape
    rng = np.random.default_rng(seed)
    g = grucy.GRU(I, H, seed=seed)
    x = rng.standard_normal((T, B, I), dtype=np.float32)
    dy = rng.standard_normal((T, B, H), dtype=np.float32)
    if mode == "infer":
        return lambda: g(x, training=False)

    def train():
        g(x)
        g.backward(dy)
    return train


def machine(grucy, threads):
    import numpy as np
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "kernels": grucy._gru.kernel_info(),
            "numpy": np.__version__}
    try:
        info["lscpu"] = subprocess.run(["lscpu"], capture_output=True, text=True,
                                       timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        info["lscpu"] = None
    for name in ("torch", "onnxruntime", "scipy", "mpi4py"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # missing or broken: say so
            info[name] = None
    info["fma_gflops"] = {str(n): grucy._gru.fma_peak(n, 0.3) for n in (1, threads)}
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    try:
        from threadpoolctl import threadpool_limits
        with threadpool_limits(threads):
            t = time_min(lambda: a @ a, 1.0)
    except ImportError:
        t = time_min(lambda: a @ a, 1.0)
    info["sgemm_gflops"] = 2 * 2048 ** 3 / (t["ms_min"] * 1e6)
    return info


def run_sweep(out, counts, seconds):
    cmd = [sys.executable, os.path.join(HERE, "bench_gru.py"), "--cases", "sweep",
           "--threads", ",".join(map(str, counts)),
           "--sweep-shapes", ",".join(label(s) for s in SHAPES),
           "--peers", "torch,onnxruntime", "--target-seconds", str(seconds),
           "--json", os.path.join(out, "bench_gru.json"),
           "--markdown", os.path.join(out, "sweep.md")]
    log("sweep: " + " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, text=True, capture_output=True)
    sys.stdout.write(proc.stdout[-6000:])
    sys.stderr.write(proc.stderr[-3000:])
    log(f"sweep: exit {proc.returncode} after {time.perf_counter() - t0:.0f} s")
    try:
        with open(os.path.join(out, "bench_gru.json")) as f:
            return json.load(f).get("sweep")
    except (OSError, ValueError):
        return None


def run_plans(grucy, threads, seconds):
    rows = []
    grucy.set_num_threads(threads)
    for shape in SHAPES[:2]:
        for groups, chunks in PLANS:
            if groups * chunks > threads:
                continue
            old = grucy._gru._force_plan(groups, chunks)
            try:
                plan = grucy._gru.work_plan(shape[1], shape[0], shape[2], shape[3])
                row = {"shape": label(shape), "forced": [groups, chunks],
                       "plan": [plan["groups"], plan["chunks"]], "threads": threads}
                for mode in ("train", "infer"):
                    row[mode] = time_min(make_step(grucy, shape, mode), seconds)
            finally:
                grucy._gru._force_plan(*old)
            rows.append(row)
            log(f"plan {row['shape']} {row['plan']} (forced {row['forced']}): train "
                f"{row['train']['ms_min']:.2f} ms, infer {row['infer']['ms_min']:.2f} ms")
    return rows


def run_isas(grucy, threads, seconds):
    """The GEMM kernels this CPU runs (GRUCY_ISA), on the middle shape at 1 and all
    threads: what a CPU without AVX-512 would get from grucy's own kernels."""
    rows = []
    shape = SHAPES[1]
    for isa in ("avx512", "avx2", "portable", "blas"):
        try:
            old = grucy._gru._set_isa(isa)
        except ValueError:
            continue
        try:
            for n in (1, threads):
                grucy.set_num_threads(n)
                row = {"isa": isa, "shape": label(shape), "threads": n}
                for mode in ("train", "infer"):
                    row[mode] = time_min(make_step(grucy, shape, mode), seconds)
                rows.append(row)
                log(f"isa {isa} {label(shape)} {n} threads: train "
                    f"{row['train']['ms_min']:.2f} ms, infer {row['infer']['ms_min']:.2f} ms")
        finally:
            grucy._gru._set_isa(old)
    grucy.set_num_threads(threads)
    return rows


def worker(args):
    """One rank of the data-parallel step (under mpirun)."""
    import numpy as np
    import grucy
    from grucy.distributed import get_communicator
    comm = get_communicator(True)
    rank, size = comm.rank, comm.size
    grucy.set_num_threads(args.worker_threads)
    B, T, I, H = (int(v) for v in args.worker.split("x"))
    b = B // size + (1 if rank < B % size else 0)
    rng = np.random.default_rng(rank)
    g = grucy.GRU(I, H, seed=0)
    x = rng.standard_normal((T, b, I), dtype=np.float32)
    dy = rng.standard_normal((T, b, H), dtype=np.float32)
    grads = list(g.grads.values())

    def step():
        g.zero_grad()
        g(x)
        g.backward(dy)
        comm.allreduce_sum_(grads)
    for _ in range(2):
        step()
    times = []
    end = time.perf_counter() + args.seconds
    while True:
        comm.barrier()
        t0 = time.perf_counter()
        step()
        comm.barrier()
        times.append(time.perf_counter() - t0)
        done = comm.allreduce_sum(np.array([time.perf_counter() > end and len(times) >= 3],
                                           dtype=np.float64))
        if done[0] == size:
            break
    if rank == 0:
        print("RESULT " + json.dumps({"ms_min": 1e3 * min(times),
                                      "ms_median": 1e3 * statistics.median(times),
                                      "repeats": len(times)}), flush=True)


def run_mpi(threads, seconds):
    from grucy.distributed import local_mpiexec
    rows = []
    splits = [(p, threads // p) for p in (threads, threads // 2, threads // 4,
                                          threads // 8) if p >= 1 and threads % p == 0]
    env = dict(os.environ)
    for shape in SHAPES[:2]:
        for ranks, per in splits:
            if ranks == 1:
                continue  # 1 x n is the in-process figure of the sweep
            env["OMP_NUM_THREADS"] = str(per)
            env["OPENBLAS_NUM_THREADS"] = "1"
            try:
                cmd = local_mpiexec(ranks, transport="shared-memory") + [
                    sys.executable, os.path.abspath(__file__), "--worker", label(shape),
                    "--worker-threads", str(per), "--seconds", str(seconds)]
            except RuntimeError as exc:
                log(f"mpi: {exc}")
                return rows
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, text=True, capture_output=True, env=env, timeout=600)
            result = None
            for line in proc.stdout.splitlines():
                if line.startswith("RESULT "):
                    result = json.loads(line[7:])
            rows.append({"shape": label(shape), "ranks": ranks, "threads": per,
                         "train": result, "exit": proc.returncode})
            if result is None:
                log(f"mpi {label(shape)} {ranks}x{per}: failed ({proc.returncode}): "
                    f"{proc.stderr[-800:]}")
            else:
                log(f"mpi {label(shape)} {ranks}x{per}: {result['ms_min']:.2f} ms "
                    f"({time.perf_counter() - t0:.0f} s)")
    return rows


def lasting_cost(threads, seconds):
    """1x100x32x64 training at 2 threads: fresh, then after calls at `threads`."""
    code = (
        "import sys, json; sys.path.insert(0, %r)\n"
        "import grucy\nfrom bench_cores import make_step, time_min\n"
        "s = make_step(grucy, (64, 50, 256, 512), 'train'); small = make_step(grucy, "
        "(1, 100, 32, 64), 'train')\n"
        "grucy.set_num_threads(2); fresh = time_min(small, %r)\n"
        "grucy.set_num_threads(%d); [s() for _ in range(3)]\n"
        "grucy.set_num_threads(2); after = time_min(small, %r)\n"
        "print(json.dumps({'fresh': fresh, 'after': after}))\n"
    ) % (HERE, seconds, threads, seconds)
    proc = subprocess.run([sys.executable, "-c", code], text=True, capture_output=True,
                          timeout=600)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": proc.stderr[-800:]}


def identical_across_threads(grucy, counts):
    import numpy as np
    rng = np.random.default_rng(1)
    g = grucy.GRU(48, 160, num_layers=2, bidirectional=True, seed=2)
    x = rng.standard_normal((20, 70, 48), dtype=np.float32)
    lengths = rng.integers(1, 21, 70)
    dy = rng.standard_normal((20, 70, 320), dtype=np.float32)
    ref = None
    for n in counts:
        grucy.set_num_threads(n)
        g.zero_grad()
        y, h = g(x, lengths=lengths)
        dx, dh = g.backward(dy)
        got = b"".join(a.tobytes() for a in [y, h, dx, dh] + list(g.grads.values()))
        if ref is None:
            ref = got
        elif got != ref:
            return False
    return True


def targets(sweep, plans, mpi, threads):
    """Issue 13's many-core targets from this run's figures."""
    out = {}
    if not sweep:
        return {"error": "no sweep"}
    rows = {(r["label"].split()[0], r["mode"]): r for r in sweep["rows"]}

    def t(shape, mode, impl, n):
        r = rows.get((label(shape), mode))
        try:
            return r["impls"][impl]["by_threads"][str(n)]["ms_min"]
        except (KeyError, TypeError):
            return None
    n = str(threads)
    big, mid = SHAPES[0], SHAPES[1]
    for shape, want in ((big, 2.0), (mid, 1.5)):
        g, p = t(shape, "train", "grucy", threads), t(shape, "train", "torch", threads)
        out[f"train {label(shape)} vs torch at {n}"] = {
            "ratio": p / g if g and p else None, "want": want}
    g1, gn = t(big, "train", "grucy", 1), t(big, "train", "grucy", threads)
    out[f"efficiency {label(big)} at {n}"] = {
        "ratio": g1 / (threads * gn) if g1 and gn else None, "want": 0.5}
    for shape in SHAPES:
        g, o = t(shape, "infer", "grucy", threads), t(shape, "infer", "onnxruntime", threads)
        out[f"infer {label(shape)} vs onnxruntime at {n}"] = {
            "ratio": o / g if g and o else None, "want": 1.5}
    for shape in SHAPES[:2]:
        best = [m["train"]["ms_min"] for m in mpi if m["shape"] == label(shape) and m["train"]]
        g = t(shape, "train", "grucy", threads)
        out[f"train {label(shape)}: best MPI split / grucy {n} threads"] = {
            "ratio": min(best) / g if best and g else None, "want": 1.0}
    for shape in SHAPES:
        for mode in ("train", "infer"):
            times = [(int(c), t(shape, mode, "grucy", c)) for c in sweep["counts"]]
            worst = max((tn / min(tm for m, tm in times if m <= c and tm)
                         for c, tn in times if tn), default=None)
            out[f"never hurt {label(shape)} {mode}"] = {"ratio": worst, "want": 1.1,
                                                        "lower_is_better": True}
    for k, v in out.items():
        r = v["ratio"]
        v["met"] = None if r is None else (r <= v["want"] if v.get("lower_is_better")
                                           else r >= v["want"])
    return out


def main(argv=None):
    global SHAPES
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=output_dir, default=None, metavar="DIR",
                        help="folder for cores.json and the sweep, made if missing "
                             "(default: bench/results/cores)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="largest thread count (default: the CPUs, at most 16)")
    parser.add_argument("--seconds", type=positive_float, default=1.5,
                        help="time per measured case")
    parser.add_argument("--shapes", type=shape_list(indices=None), default=None,
                        help="BxTxIxH list (default: " + ",".join(label(x) for x in SHAPES)
                        + "; the first two are the large ones)")
    parser.add_argument("--skip", type=subset(STEPS, "--skip", allow_all=False), default=[],
                        help="comma list of steps to skip: " + ",".join(STEPS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=positive_int, default=1,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.out is None:  # the default, checked like a given --out
        args.out = checked_default(parser, "--out", DEFAULT_OUT, output_dir)
    out_dir = args.out
    if args.shapes:
        SHAPES = tuple(args.shapes)
    import grucy
    threads = args.threads or min(16, os.cpu_count() or 1)
    counts = [n for n in (1, 2, 4, 8, 16, 32, 64) if n < threads] + [threads]
    os.makedirs(out_dir, exist_ok=True)
    skip = set(args.skip)
    doc = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "threads": threads, "counts": counts}
    t0 = time.perf_counter()
    doc["machine"] = machine(grucy, threads)
    doc["work_plans"] = {label(s): grucy._gru.work_plan(s[1], s[0], s[2], s[3],
                                                          threads=threads)
                         for s in SHAPES}
    log(f"machine: {doc['machine']['kernels']}, FMA {doc['machine']['fma_gflops']}, "
        f"SGEMM {doc['machine']['sgemm_gflops']:.0f} GFLOP/s")
    doc["identical_across_threads"] = (None if "identical" in skip else
                                       identical_across_threads(grucy, counts))
    log(f"identical across {counts} threads: {doc['identical_across_threads']}")
    doc["sweep"] = None if "sweep" in skip else run_sweep(out_dir, counts, args.seconds * 2)
    doc["plans"] = [] if "plans" in skip else run_plans(grucy, threads, args.seconds)
    doc["mpi"] = [] if "mpi" in skip else run_mpi(threads, args.seconds)
    doc["isas"] = [] if "isas" in skip else run_isas(grucy, threads, args.seconds / 2)
    doc["lasting"] = None if "lasting" in skip else lasting_cost(threads, args.seconds)
    log(f"lasting cost: {doc['lasting']}")
    doc["targets"] = targets(doc["sweep"], doc["plans"], doc["mpi"], threads)
    doc["seconds"] = time.perf_counter() - t0
    for k, v in doc["targets"].items():
        log(f"target {k}: {v}")
    path = os.path.join(out_dir, "cores.json")
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1, default=str)
    os.replace(path + ".tmp", path)
    log(f"wrote {path} after {doc['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
