#!/usr/bin/env python
"""Do grucy's kernels run in parallel from two Python threads (is the GIL released)?

Two layers, each with its own data, run the same number of forwards (or training
steps) first one after the other, then at the same time in two Python threads.  grucy's
OpenMP loops and BLAS are limited to one thread each (threadpoolctl), so any parallelism
comes from the two Python threads alone.  Reported, per mode:

* ``sequential s`` / ``threaded s``: wall time of both workloads (min over repeats);
* ``speedup``: sequential / threaded; ~2 on two idle cores when the kernels release the
  GIL, ~1 when they do not;
* ``CPU overlap``: process CPU time / wall time while both threads run (the number of
  cores busy at once, up to 2);
* for comparison, the same for a pure-Python loop, which holds the GIL (speedup ~1);
* Python progress beside one long call: how fast a pure-Python counter thread runs
  while one long grucy forward runs, relative to alone (~0 if the call held the GIL,
  as ``sum(range(n))`` does, shown for contrast).  Less sensitive to a busy machine.

The results of the threaded run are checked bitwise against the sequential run.

    PYTHONPATH=src python bench/bench_threads.py [--quick]

Timings on a shared machine are noisy: the load average is printed; read the ratios.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np
from threadpoolctl import threadpool_limits

import grucy
from _bench_args import shape


def workload(layer, x, dy, mode, repeats):
    out = None
    for _ in range(repeats):
        if mode == "infer":
            out = layer.forward(x, training=False)[0]
        else:
            layer.forward(x)
            out = layer.backward(dy)[0]
    return out


def python_loop(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def timed_pair(fa, fb):
    """(sequential wall, threaded wall, threaded CPU overlap, results equal)."""
    t0 = time.perf_counter()
    ra, rb = fa(), fb()
    seq = time.perf_counter() - t0
    box = {}
    start = threading.Barrier(3)

    def run(name, f):
        start.wait()
        box[name] = f()

    threads = [threading.Thread(target=run, args=("a", fa)),
               threading.Thread(target=run, args=("b", fb))]
    for t in threads:
        t.start()
    start.wait()
    c0, t0 = time.process_time(), time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    same = all(np.array_equal(np.asarray(box[k]), np.asarray(r))
               for k, r in (("a", ra), ("b", rb)))
    return seq, wall, cpu / wall, same


def progress_ratio(f, alone_seconds=0.3):
    """How fast a pure-Python counter thread advances while ``f`` runs in this thread,
    relative to how fast it advances alone.  ~0 when ``f`` holds the GIL in C code, up
    to ~1 when ``f`` releases it (less when the cores are busy)."""
    def count_for(stop):
        n = 0
        while not stop.is_set():
            n += 1
        return n

    stop = threading.Event()
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("n", count_for(stop)))
    t0 = time.perf_counter()
    t.start()
    time.sleep(alone_seconds)
    stop.set()
    t.join()
    rate_alone = box["n"] / (time.perf_counter() - t0)

    stop = threading.Event()
    box = {}
    started = threading.Event()
    t = threading.Thread(target=lambda: (started.set(), box.setdefault("n", count_for(stop))))
    t.start()
    started.wait()
    t0 = time.perf_counter()
    f()
    wall = time.perf_counter() - t0
    stop.set()
    t.join()
    return box["n"] / wall / rate_alone


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--shape", type=shape, default=(32, 100, 128, 256),
                    help="BxTxIxH (default 32x100x128x256)")
    args = ap.parse_args(argv)
    B, T, I, H = args.shape
    repeats, rounds = (2, 2) if args.quick else (5, 5)
    rng = np.random.default_rng(0)
    layers = [grucy.GRU(I, H, seed=s) for s in (1, 2)]
    xs = [rng.standard_normal((T, B, I)).astype(np.float32) for _ in layers]
    dys = [rng.standard_normal((T, B, H)).astype(np.float32) for _ in layers]
    print(f"grucy {grucy.__version__}  shape B={B} T={T} I={I} H={H}  cores "
          f"{os.cpu_count()}  load {os.getloadavg()[0]:.2f}")
    print(f"{'mode':<14} {'sequential s':>12} {'threaded s':>11} {'speedup':>8} "
          f"{'CPU overlap':>11}  bitwise")
    grucy.set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):
        cases = {
            mode: [lambda i=i, mode=mode: workload(layers[i], xs[i], dys[i], mode, repeats)
                   for i in range(2)]
            for mode in ("infer", "train")
        }
        n = 2_000_000 if args.quick else 5_000_000
        cases["python (GIL)"] = [lambda: python_loop(n)] * 2
        for name, (fa, fb) in cases.items():
            fa(), fb()  # warm up
            runs = [timed_pair(fa, fb) for _ in range(rounds)]
            seq = min(r[0] for r in runs)
            thr = min(r[1] for r in runs)
            overlap = max(r[2] for r in runs)
            same = all(r[3] for r in runs)
            print(f"{name:<14} {seq:12.3f} {thr:11.3f} {seq / thr:8.2f} {overlap:11.2f}  "
                  f"{'yes' if same else 'NO'}")
        print("\nPython progress beside one long call (counter rate during / alone; "
              "~0 = the call holds the GIL):")
        long_x = np.ascontiguousarray(np.tile(xs[0], (10, 1, 1)))
        probes = {
            "grucy forward": lambda: layers[0].forward(long_x, training=False),
            "C holding GIL": lambda: sum(range(30_000_000)),
        }
        for name, f in probes.items():
            ratios = [progress_ratio(f) for _ in range(rounds)]
            print(f"  {name:<16} {max(ratios):.2f}")
    print(f"load at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
