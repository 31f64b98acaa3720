#!/usr/bin/env python
"""Soak test: many streaming steps and many training steps with flat memory.

Two phases, each watched by RSS (``/proc/self/statm``) and tracemalloc (every Python
and NumPy allocation):

* **stream**: ``--stream-steps`` single steps of a 2-layer GRU at batch size 1, through
  ``gru.stream()`` when this grucy has it, else ``gru.forward`` on one step at a time,
  carrying the state (``training=False``);
* **train**: ``--train-steps`` training steps of GRU -> Linear -> MSE with Adam and
  gradient clipping (forward, backward, clip, step, zero_grad).

Memory is sampled at evenly spaced steps; the first ``--warmup`` fraction is skipped
(allocator and BLAS buffers settle there).  Reported per phase: time per step, RSS and
traced memory after the warm-up and at the end, their growth, and the growth per step
(least-squares slope).  A leak of one small NumPy array per step shows up as >= ~100
traced bytes per step.

    PYTHONPATH=src python bench/soak.py                 # 100,000 + 10,000 steps
    PYTHONPATH=src python bench/soak.py --stream-steps 5000 --train-steps 300 --json -

``--json PATH`` writes the numbers (``-``: to stdout, instead of the summary);
tests/test_soak.py runs a scaled-down version and asserts on them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import tracemalloc

import numpy as np

import grucy
from grucy.nn import Linear, mse_loss
from grucy.optim import Adam, clip_grad_norm

from _bench_args import fraction, output_path, positive_int

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def slope(xs, ys):
    """Least-squares slope of ys over xs."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) < 2:
        return 0.0
    xc = xs - xs.mean()
    return float((xc * (ys - ys.mean())).sum() / (xc * xc).sum())


def watch(step, n_steps, samples, warmup):
    """Run ``step(i)`` n_steps times; sample memory; return the phase's numbers."""
    marks = np.unique(np.linspace(int(n_steps * warmup), n_steps - 1, samples).astype(int))
    # Preallocated, so that recording the samples allocates nothing per sample.
    points = np.zeros((len(marks), 3), np.int64)
    next_mark = iter(range(len(marks)))
    k = next(next_mark)
    gc.collect()
    t0 = time.perf_counter()
    sampling = 0.0
    for i in range(n_steps):
        step(i)
        if i == marks[k]:
            # A full collection first: it also empties CPython's free lists (up to 2000
            # tuples of each size, ...), which tracemalloc counts as allocated and which
            # fill at a pace of their own; bounded caches, not leaks.
            s0 = time.perf_counter()
            gc.collect()
            points[k] = (i, rss_bytes(), tracemalloc.get_traced_memory()[0])
            k = next(next_mark, k)
            sampling += time.perf_counter() - s0
    elapsed = time.perf_counter() - t0 - sampling
    steps, rss, traced = (points[:, j].tolist() for j in range(3))
    return {
        "steps": n_steps,
        "us_per_step": 1e6 * elapsed / n_steps,
        "rss_after_warmup": rss[0], "rss_end": rss[-1],
        "rss_growth": rss[-1] - rss[0], "rss_bytes_per_step": slope(steps, rss),
        "traced_after_warmup": traced[0], "traced_end": traced[-1],
        "traced_growth": traced[-1] - traced[0],
        "traced_bytes_per_step": slope(steps, traced),
        "traced_peak": tracemalloc.get_traced_memory()[1],
    }


def stream_phase(n_steps, samples, warmup, seed=0):
    rng = np.random.default_rng(seed)
    gru = grucy.GRU(8, 64, num_layers=2, dtype=np.float32, seed=seed)
    pool = rng.standard_normal((997, 1, 8)).astype(np.float32)
    last = {}
    if hasattr(gru, "stream"):
        api = "gru.stream().step"
        stream = gru.stream(batch_size=1)

        def step(i):
            last["y"] = stream.step(pool[i % len(pool)])
    else:
        api = "gru.forward(T=1) carrying h"
        state = {"h": None}

        def step(i):
            y, state["h"] = gru.forward(pool[i % len(pool)][None], state["h"],
                                        training=False)
            last["y"] = y
    result = watch(step, n_steps, samples, warmup)
    result["api"] = api
    result["finite"] = bool(np.isfinite(last["y"]).all())
    return result


def train_phase(n_steps, samples, warmup, seed=0):
    rng = np.random.default_rng(seed)
    T, B, I, H = 16, 8, 4, 32
    gru = grucy.GRU(I, H, num_layers=2, dtype=np.float32, seed=seed)
    head = Linear(H, 1, dtype=np.float32, seed=seed + 1)
    grads = list(gru.grads.values()) + list(head.grads.values())
    opt = Adam(gru.parameters() + head.parameters(), grads, lr=1e-3)
    xs = rng.standard_normal((13, T, B, I)).astype(np.float32)
    ys = np.tanh(xs.sum(axis=(1, 3)))[..., None]  # something learnable, (13, B, 1)
    dy_zero = np.zeros((T, B, H), np.float32)
    losses = np.zeros(2)  # first and latest loss; no list growing with the steps

    def step(i):
        k = i % len(xs)
        opt.zero_grad()
        _, h_n = gru.forward(xs[k])
        pred = head.forward(h_n[-1])
        loss, dpred = mse_loss(pred, ys[k])
        dh = np.zeros_like(h_n)
        dh[-1] = head.backward(dpred)
        gru.backward(dy_zero, dh)
        clip_grad_norm(grads, 1.0)
        opt.step()
        losses[min(i, 1)] = loss

    result = watch(step, n_steps, samples, warmup)
    result["loss_first"], result["loss_last"] = float(losses[0]), float(losses[1])
    result["finite"] = all(np.isfinite(p).all() for p in opt.params)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--stream-steps", type=positive_int, default=100_000)
    ap.add_argument("--train-steps", type=positive_int, default=10_000)
    ap.add_argument("--samples", type=positive_int, default=50,
                    help="memory samples per phase")
    ap.add_argument("--warmup", type=fraction, default=0.1,
                    help="fraction of steps skipped, in [0, 1)")
    ap.add_argument("--json", type=output_path(literals=("-",)), default=None,
                    help="write results here ('-': stdout)")
    ap.add_argument("--no-tracemalloc", action="store_true",
                    help="RSS only: tracemalloc slows small steps several times over")
    args = ap.parse_args(argv)
    if not args.no_tracemalloc:
        tracemalloc.start()
    results = {
        "grucy": grucy.__version__, "python": sys.version.split()[0],
        "load_average": os.getloadavg()[0],
        "stream": stream_phase(args.stream_steps, args.samples, args.warmup),
        "train": train_phase(args.train_steps, args.samples, args.warmup),
        "tracemalloc": tracemalloc.is_tracing(),
    }
    tracemalloc.stop()
    if args.json == "-":
        json.dump(results, sys.stdout, indent=1)
        print()
        return results
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    mib = 1 / 2**20
    print(f"grucy {results['grucy']}, Python {results['python']}, load "
          f"{results['load_average']:.2f}, tracemalloc "
          f"{'on (times include its overhead)' if results['tracemalloc'] else 'off'}")
    for phase in ("stream", "train"):
        r = results[phase]
        extra = f" via {r['api']}" if phase == "stream" else (
            f", loss {r['loss_first']:.4f} -> {r['loss_last']:.4f}")
        print(f"\n{phase}: {r['steps']} steps, {r['us_per_step']:.1f} us/step{extra}, "
              f"outputs/weights finite: {r['finite']}")
        print(f"  RSS     {r['rss_after_warmup'] * mib:8.2f} MiB after warm-up -> "
              f"{r['rss_end'] * mib:8.2f} MiB  (growth {r['rss_growth'] * mib:+.3f} MiB, "
              f"{r['rss_bytes_per_step']:+.2f} B/step)")
        if not results["tracemalloc"]:
            continue
        print(f"  traced  {r['traced_after_warmup'] * mib:8.3f} MiB after warm-up -> "
              f"{r['traced_end'] * mib:8.3f} MiB  (growth {r['traced_growth']:+d} B, "
              f"{r['traced_bytes_per_step']:+.3f} B/step; peak "
              f"{r['traced_peak'] * mib:.2f} MiB)")
    return results


if __name__ == "__main__":
    main()
