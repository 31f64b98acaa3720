"""How the benchmark times and compares: timed entries, the repeat policy, statistics,
the agreement check, and an atomic file writer."""

from __future__ import annotations

import gc
import math
import os
import statistics
import time

import numpy as np

__all__ = ["Entry", "measure", "stats", "max_rel_diff", "geomean", "write_atomic"]


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Entry:
    """One timed callable.  ``prepare`` (untimed) runs before every call, e.g. to set
    thread counts; ``calls`` divides the time (several calls per timed sample)."""

    def __init__(self, key, fn, prepare=None, calls=1):
        self.key, self.fn, self.prepare, self.calls = key, fn, prepare, calls

    def once(self):
        if self.prepare is not None:
            self.prepare()
        return timed(self.fn) / self.calls


def measure(entries, target, min_repeats, max_repeats=1000, order="interleaved",
            warm=None):
    """Seconds per call of each entry: ``{key: [times]}``, warmed up, then repeated.

    Interleaved: every round runs each entry once, the starting entry rotating from round
    to round, so neither is always the one running right after another (cache, turbo,
    thread wake-up) and a burst of noise hits all alike.  Blocked: all repeats of one
    entry, then the next, each entry repeated for about its share ``target / len(entries)``
    of the time.  Repeats: about ``target`` seconds in total, at least ``min_repeats``,
    at most ``max_repeats`` (of each entry).  ``warm``: {key: seconds} of a call each
    entry has just made (the correctness check), which then serves as its warm-up.
    """
    warm = warm or {}
    best = {e.key: warm[e.key] if e.key in warm else e.once() * e.calls
            for e in entries}  # warm-up: thread pools, caches, first-touch of buffers
    extra = min(20, int(0.1 * target / max(sum(best.values()), 1e-9)))
    for _ in range(extra):
        for e in entries:
            best[e.key] = min(best[e.key], e.once() * e.calls)
    round_time = max(sum(best.values()), 1e-9)
    repeats = max(min_repeats, min(max_repeats, math.ceil(target / round_time)))
    # Blocked: each implementation gets an equal share of the time budget, so a fast one
    # is sampled more often (a minimum over 9 samples of a 0.2 ms call sat 50% above
    # its usual value when a burst of noise hit that block).
    own = {e.key: max(min_repeats, min(max_repeats, math.ceil(
        target / len(entries) / max(best[e.key], 1e-9)))) for e in entries}
    times = {e.key: [] for e in entries}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        if order == "interleaved":
            n = len(entries)
            for i in range(repeats):
                for e in entries[i % n:] + entries[:i % n]:
                    times[e.key].append(e.once())
        else:
            for e in entries:
                for _ in range(own[e.key]):
                    times[e.key].append(e.once())
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def stats(times, flops=None):
    """min / median ms of a list of seconds, GFLOP/s from the minimum."""
    out = {"repeats": len(times), "ms_min": min(times) * 1e3,
           "ms_median": statistics.median(times) * 1e3,
           "ms_all": [round(t * 1e3, 6) for t in times]}
    if flops:
        out["gflops"] = flops / min(times) / 1e9
    return out


def max_rel_diff(actual, desired):
    """Largest max|a - d| / max|d| over the keys both dicts have; (value, worst key)."""
    worst, where = 0.0, None
    for key, d in desired.items():
        if key not in actual:
            continue
        a = np.asarray(actual[key], np.float64)
        d = np.asarray(d, np.float64)
        if a.shape != d.shape:
            return math.inf, f"{key} shape {a.shape} != {d.shape}"
        scale = max(float(np.max(np.abs(d))), 1e-30) if d.size else 1.0
        err = float(np.max(np.abs(a - d))) / scale if d.size else 0.0
        if not err <= worst:  # NaN counts as the worst
            worst, where = err if err == err else math.inf, key
    return worst, where


def geomean(values):
    return math.exp(sum(map(math.log, values)) / len(values))


def write_atomic(path, data):
    """Write text or bytes to ``path`` through grucy's own atomic writer (a temporary file
    in the same folder, flushed, renamed over ``path``), making the folder if needed."""
    from grucy.io import atomic_write

    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, [data.encode("utf-8") if isinstance(data, str) else data])
