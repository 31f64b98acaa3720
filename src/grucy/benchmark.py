"""Benchmark grucy.GRU against its peers, in one process, on the same weights and data.

Peers (each optional, reported as missing when not installed, never faked): PyTorch
``nn.GRU`` (training step and inference), ONNX Runtime's ``GRU`` operator (inference),
the NumPy baseline ``grucy.reference.GRU``, Keras on TensorFlow, and (opt-in) Keras on the
torch backend.  Every peer's outputs (and gradients, for training) are checked against
grucy's on the same weights before it is timed; a peer that disagrees is not timed.

Cases (``--cases``):

* ``core``: the five shapes (B, T, I, H) of issue 3, float32, 1 layer, 1 direction;
* ``bidir``: a 2-layer bidirectional GRU; ``float64``: the same shape in float64;
* ``varlen``: a batch whose mean length is T/2 against the same batch at full length;
* ``scaling``: 1 thread against N threads, training, the two largest core shapes;
* ``streaming``: per-call cost of one step at B=1 (grucy's streaming API, torch GRUCell,
  a one-step ONNX Runtime session);
* ``memory``: peak memory of one training step, each in a fresh subprocess.

Timing: each case is warmed up, then the implementations run in turn (the order rotating
every round, so noise from other processes hits all of them alike), repeated until about
``--target-seconds`` are spent (at least ``--min-repeats`` times).  Ratios are taken from
the minimum times (the least disturbed runs on a shared machine); medians are shown too.

Command line: ``grucy bench [options]``, ``python -m grucy.benchmark [options]`` or
``python bench/bench_gru.py [options]``; ``--help`` lists the options, bench/README.md
explains the output.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

__all__ = ["main", "build_parser", "DEFAULT_SHAPES"]

DEFAULT_SHAPES = [  # (B, T, I, H): the five shapes of the core issue
    (1, 100, 32, 64),
    (16, 100, 64, 128),
    (32, 100, 128, 256),
    (64, 50, 256, 512),
    (32, 50, 512, 1024),
]
EXTRA_SHAPE = (32, 100, 128, 256)   # bidir, float64 and varlen cases
STREAM_SIZE = (64, 128)             # (I, H) of the streaming case, B = 1
MODES = ("train", "infer")
CASES = ("core", "bidir", "float64", "varlen", "scaling", "streaming", "memory")
PEER_NAMES = ("torch", "onnxruntime", "numpy", "keras-tf", "keras-torch")
DEFAULT_PEERS = ("torch", "onnxruntime", "numpy", "keras-tf")
DEFAULT_JSON = os.path.join("bench", "results", "bench_gru.json")
# Agreement required before a peer is timed: max |peer - grucy| / max |grucy| over every
# output and gradient.  Two correct float32 GRUs differ by ~1e-6 here; float64 by ~1e-15.
CHECK_TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
MODE_TITLES = {"train": "Training step (forward + backward)", "infer": "Inference (forward)"}


# -- options --------------------------------------------------------------------------
def _shape(text, n=4, what="BxTxIxH"):
    parts = text.strip().lower().split("x")
    if len(parts) != n or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what} with positive integers")
    return tuple(int(p) for p in parts)


def parse_shapes(text):
    """``1,3`` (1-based indices into the default list) or ``16x100x64x128`` (BxTxIxH)."""
    shapes = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        if "x" in item:
            shapes.append(_shape(item))
        elif item.isdigit() and 1 <= int(item) <= len(DEFAULT_SHAPES):
            shapes.append(DEFAULT_SHAPES[int(item) - 1])
        else:
            raise argparse.ArgumentTypeError(
                f"{item!r} is neither an index 1..{len(DEFAULT_SHAPES)} nor BxTxIxH")
    if not shapes:
        raise argparse.ArgumentTypeError("no shapes given")
    return shapes


def _subset(allowed, what):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if items == ["all"]:
            return list(allowed)
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{what} must be a comma-separated subset of {','.join(allowed)} (or 'all'), "
                f"got {text!r}")
        return items
    return parse


def _positive(convert, what):
    """An argparse type: ``convert(text)`` if it is > 0, else an error naming ``what``."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    return parse


positive_int = _positive(int, "a positive integer")
positive_float = _positive(float, "a positive number")


def limit_threads(threads, grucy, log):
    """With ``threads`` (not None): grucy's thread count and, through threadpoolctl,
    every BLAS and OpenMP runtime loaded so far (numpy's and scipy's OpenBLAS, libgomp),
    so all implementations get the same number.  Returns the threadpoolctl limiter to
    restore afterwards, or None."""
    if threads is None:
        return None
    grucy.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log("grucy bench: threadpoolctl is not installed; --threads sets grucy's, "
            "torch's and ONNX Runtime's threads, BLAS keeps its own (set "
            "OPENBLAS_NUM_THREADS before starting)")
        return None
    return threadpool_limits(limits=threads)


def build_parser(prog=None):
    shape_list = ", ".join(f"{i}: {'x'.join(map(str, s))}"
                           for i, s in enumerate(DEFAULT_SHAPES, 1))
    p = argparse.ArgumentParser(
        prog=prog,
        description="Time grucy.GRU against PyTorch, ONNX Runtime, the NumPy baseline and "
                    "Keras on the same weights and data, check every peer's results "
                    "against grucy's, and report speedups, GFLOP/s against a large GEMM "
                    "of the same run, thread scaling, streaming overhead, peak memory "
                    "and the targets of issue 3.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Default shapes (BxTxIxH) {shape_list}.  See bench/README.md.")
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats, less time per case (smoke run, about a minute)")
    p.add_argument("--shapes", type=parse_shapes, default=None, metavar="LIST",
                   help="core shapes: comma-separated 1-based indices into the default "
                        "shapes and/or explicit BxTxIxH, e.g. '1,2' or '8x200x40x96'")
    p.add_argument("--modes", type=_subset(MODES, "--modes"), default=list(MODES),
                   metavar="LIST", help="subset of 'train,infer' (default: both)")
    p.add_argument("--peers", type=_subset(PEER_NAMES, "--peers"),
                   default=list(DEFAULT_PEERS), metavar="LIST",
                   help=f"peers to run, subset of {','.join(PEER_NAMES)} or 'all' "
                        f"(default: {','.join(DEFAULT_PEERS)}; keras-torch is opt-in, "
                        f"it is slow, and only one Keras backend can run per process)")
    p.add_argument("--cases", type=_subset(CASES, "--cases"), default=list(CASES),
                   metavar="LIST", help=f"subset of {','.join(CASES)} (default: all)")
    p.add_argument("--extra-shape", type=_shape, default=EXTRA_SHAPE, metavar="BxTxIxH",
                   help="shape of the bidir, float64 and varlen cases (default: "
                        f"{'x'.join(map(str, EXTRA_SHAPE))})")
    p.add_argument("--stream-size", type=lambda s: _shape(s, 2, "IxH"), default=STREAM_SIZE,
                   metavar="IxH", help="input and hidden size of the streaming case "
                                       f"(default: {'x'.join(map(str, STREAM_SIZE))})")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="threads for grucy (set_num_threads), every BLAS and OpenMP "
                        "runtime in the process (threadpoolctl), torch.set_num_threads "
                        "and ONNX Runtime's intra_op_num_threads; default: grucy's "
                        "current thread count for every peer, BLAS left as it is")
    p.add_argument("--json", default=DEFAULT_JSON, metavar="PATH",
                   help="results as JSON (default: %(default)s, relative to the current "
                        "directory); '-' or '' to skip")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="PNG of the speedups (needs matplotlib; default: next to the JSON "
                        "file, with .png); '-' to skip")
    p.add_argument("--markdown", nargs="?", const="-", default=None, metavar="PATH",
                   help="print the README table (Markdown) after the report, or write "
                        "it to PATH")
    p.add_argument("--target-seconds", type=positive_float, default=None, metavar="S",
                   help="approximate time per case, all implementations together "
                        "(default 3, 0.25 with --quick)")
    p.add_argument("--min-repeats", type=positive_int, default=None, metavar="N",
                   help="minimum timed repeats per implementation and case "
                        "(default 5, 3 with --quick)")
    p.add_argument("--order", choices=("interleaved", "blocked"), default="blocked",
                   help="blocked (default): all repeats of one implementation, then the "
                        "next, so no peer's spinning threads slow the one that follows; "
                        "interleaved: implementations take turns call by call")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and data")
    p.add_argument("--gemm-size", type=positive_int, default=2048, metavar="N",
                   help="size of the N^3 GEMM that measures the machine's peak "
                        "(default: %(default)s)")
    p.add_argument("--profile", action="store_true",
                   help="instead of the benchmark, break grucy's training step into "
                        "recurrent GEMM, hoisted GEMMs, fused passes, Python overhead and "
                        "allocation on the --shapes (see bench/README.md)")
    # Development only: time the reference in grucy's place (speedups vs numpy ~ 1.0).
    p.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)
    # Internal: one memory measurement in a fresh process (see measure_memory).
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return p


# -- machine --------------------------------------------------------------------------
def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [x for x in ("avx2", "fma", "avx512f") if x in flags]
    except OSError:
        pass
    return []


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def loadavg():
    """1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_warning(m):
    """A warning line when other work competed for the CPUs during the run, else ''."""
    loads = [x for x in (m.get("loadavg_start"), m.get("loadavg_end")) if x is not None]
    cpus = m["usable_cpus"] or 1
    # This process itself contributes up to `cpus` to the end-of-run figure.
    if loads and max(loads) > cpus + 0.75:
        return (f"WARNING: load average up to {max(loads):.1f} on {cpus} CPUs: other "
                f"processes competed for the cores; timings (medians above all) are "
                f"unreliable, and OpenMP/BLAS threads that wait for each other suffer "
                f"most. Rerun on a quiet machine.")
    return ""


def blas_info():
    try:
        import threadpoolctl
    except ImportError:
        return None
    out = []
    for d in threadpoolctl.threadpool_info():
        out.append({k: d.get(k) for k in ("user_api", "internal_api", "version",
                                           "num_threads", "threading_layer",
                                           "architecture")}
                   | {"library": os.path.basename(d.get("filepath", ""))})
    return out


def machine_info(grucy, threads):
    import scipy

    def call(name):
        fn = getattr(grucy, name, None)
        try:
            return fn() if fn is not None else None
        except Exception as exc:  # report, don't die, on a half-built package
            return f"error: {exc}"

    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "grucy": getattr(grucy, "__version__", "?"),
        "grucy_openmp": call("openmp_enabled"),
        "grucy_threads": call("get_num_threads"),
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        "blas": blas_info(),
    }


# -- timing ---------------------------------------------------------------------------
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


def gemm_peak(n, repeats, dtype=np.float32):
    """Best GFLOP/s of an n^3 GEMM, through numpy and through scipy's BLAS.

    grucy's kernels call scipy's BLAS, the NumPy baseline numpy's; the two may be
    different builds, so the faster of the two is taken as the machine's practical peak.
    """
    from scipy.linalg import blas as sblas

    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype)
    af, bf = np.asfortranarray(a), np.asfortranarray(b)
    routine = sblas.sgemm if np.dtype(dtype) == np.float32 else sblas.dgemm
    flops = 2.0 * n ** 3
    result = {}
    for name, fn in (("numpy", lambda: np.matmul(a, b, out=c)),
                     ("scipy", lambda: routine(1.0, af, bf))):
        fn()  # warm-up: thread pool start, page faults
        result[name] = flops / min(timed(fn) for _ in range(repeats)) / 1e9
    return result


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


def stats(times, flops=None, peak=None):
    """min / median ms of a list of seconds, GFLOP/s from the minimum."""
    out = {"repeats": len(times), "ms_min": min(times) * 1e3,
           "ms_median": statistics.median(times) * 1e3,
           "ms_all": [round(t * 1e3, 6) for t in times]}
    if flops:
        out["gflops"] = flops / min(times) / 1e9
        if peak:
            out["pct_gemm"] = 100.0 * out["gflops"] / peak
    return out


# -- the benchmark run ----------------------------------------------------------------
class Bench:
    """Configuration and results of one run."""

    def __init__(self, args, grucy, log):
        from . import _bench_peers as bp

        self.args, self.grucy, self.log, self.bp = args, grucy, log, bp
        self.threads = args.threads or grucy.get_num_threads()
        self.target = args.target_seconds or (0.25 if args.quick else 3.0)
        self.min_repeats = args.min_repeats or (3 if args.quick else 5)
        self.subject = bp.NumpyPeer if args.self_test else bp.SUBJECT
        self.peer_status = {}
        for name in args.peers:
            ok, detail = bp.PEERS[name].status()
            self.peer_status[name] = {"available": ok, "detail": detail}
        self.failures = []   # peer checks that failed (the run exits with status 1)
        self.gemm = {}       # dtype name -> peak GFLOP/s

    def available_peers(self, mode=None):
        return [n for n in self.args.peers if self.peer_status[n]["available"]
                and (mode is None or mode in self.bp.PEERS[n].MODES)]

    def tol(self, dtype):
        return CHECK_TOL[np.dtype(dtype)]

    # One timed case: every implementation on one or more variants of the same problem.
    def time_case(self, variants, mode, peers=None):
        """variants: [(tag, Problem)], timed together; returns {tag: {impl: result}}."""
        bp = self.bp
        peers = self.available_peers(mode) if peers is None else peers
        entries, results, impls, warm = [], {}, [], {}
        for tag, prob in variants:
            res = results[tag] = {}
            subject = self.subject(prob, self.threads)
            t0 = time.perf_counter()
            ref = subject.train_outputs() if mode == "train" else subject.infer_outputs()
            warm[(tag, "grucy")] = time.perf_counter() - t0
            impls.append(subject)
            res["grucy"] = {"status": "ok"}
            entries.append(Entry((tag, "grucy"), getattr(subject, _method(mode))))
            for name in peers:
                cls = bp.PEERS[name]
                try:
                    peer = cls(prob, self.threads)
                    t0 = time.perf_counter()
                    out = peer.train_outputs() if mode == "train" else peer.infer_outputs()
                    warm[(tag, name)] = time.perf_counter() - t0
                except bp.Unsupported as exc:
                    res[name] = {"status": "unsupported", "detail": str(exc)}
                    continue
                except Exception as exc:  # a broken peer is reported, the run goes on
                    res[name] = {"status": "error", "detail": f"{type(exc).__name__}: {exc}"}
                    self.log(f"  {name}: {res[name]['detail']}")
                    continue
                err, where = max_rel_diff(out, ref)
                tol = self.tol(prob.dtype)
                res[name] = {"max_rel_diff": err, "check_tol": tol}
                if not err <= tol:
                    res[name]["status"] = "mismatch"
                    res[name]["detail"] = (f"disagrees with grucy: max relative difference "
                                           f"{err:.3g} in {where} > {tol:g}; not timed")
                    self.failures.append(f"{name} {mode} {prob_label(prob)}: "
                                         f"{res[name]['detail']}")
                    self.log(f"  WARNING: {name}: {res[name]['detail']}")
                    continue
                res[name]["status"] = "ok"
                impls.append(peer)
                entries.append(Entry((tag, name), getattr(peer, _method(mode))))
        times = measure(entries, self.target, self.min_repeats, order=self.args.order,
                        warm=warm)
        for impl in impls:
            impl.reset()  # gradients accumulated over the repeats
        dtype_name = variants[0][1].dtype.name
        peak = self.gemm.get(dtype_name)
        for (tag, name), ts in times.items():
            prob = dict(variants)[tag]
            results[tag][name].update(stats(ts, prob.flops(mode), peak))
        return results

    def summarize_case(self, kind, prob, mode, res):
        """A result row: the problem, each implementation's result, the ratios."""
        g = res["grucy"]
        row = {"kind": kind, "label": prob_label(prob), "mode": mode,
               "B": prob.B, "T": prob.T, "I": prob.I, "H": prob.H, "layers": prob.layers,
               "bidirectional": prob.bidirectional, "dtype": prob.dtype.name,
               "mean_length": (prob.T if prob.lengths is None
                               else float(np.mean(prob.lengths))),
               "gflop": prob.flops(mode) / 1e9, "impls": res,
               "speedup": {}, "speedup_median": {}}
        for name, r in res.items():
            if name != "grucy" and r.get("status") == "ok":
                row["speedup"][name] = r["ms_min"] / g["ms_min"]
                row["speedup_median"][name] = r["ms_median"] / g["ms_median"]
        timed_peers = [n for n in row["speedup"]]
        if timed_peers:
            fastest = min(timed_peers, key=lambda n: res[n]["ms_min"])
            row["fastest_peer"] = fastest
            row["speedup_vs_fastest"] = row["speedup"][fastest]
        checks = [r["max_rel_diff"] for r in res.values() if "max_rel_diff" in r]
        row["max_rel_diff"] = max(checks) if checks else None
        row["checks_ok"] = all(r.get("status") != "mismatch" for r in res.values())
        return row


def _method(mode):
    return "train_step" if mode == "train" else "infer"


def prob_label(prob):
    s = "x".join(map(str, prob.shape))
    if prob.layers > 1 or prob.bidirectional:
        s += f" L{prob.layers}{' bidir' if prob.bidirectional else ''}"
    if prob.dtype != np.float32:
        s += f" {prob.dtype.name}"
    if prob.lengths is not None:
        s += f" len~{np.mean(prob.lengths):g}"
    return s


def half_mean_lengths(B, T, seed):
    """B lengths in [1, T] with mean T/2 (to rounding), spread evenly, shuffled."""
    lengths = np.clip(np.round((np.arange(B) + 0.5) * T / B), 1, T).astype(np.int64)
    if B == 1:
        lengths[:] = max(1, T // 2)
    np.random.default_rng(seed).shuffle(lengths)
    return lengths


# -- the groups of cases ---------------------------------------------------------------
def run_timed_groups(bench, shapes):
    """core, bidir, float64, varlen: rows of the main tables, and the varlen ratios."""
    bp, args, log = bench.bp, bench.args, bench.log
    B, T, I, H = args.extra_shape
    plan = []  # (kind, [(tag, Problem)])
    if "core" in args.cases:
        for shape in shapes:
            plan.append(("core", [("main", bp.Problem(*shape, seed=args.seed))]))
    if "bidir" in args.cases:
        plan.append(("bidir", [("main", bp.Problem(B, T, I, H, layers=2, bidirectional=True,
                                                   seed=args.seed))]))
    if "float64" in args.cases:
        plan.append(("float64", [("main", bp.Problem(B, T, I, H, dtype=np.float64,
                                                     seed=args.seed))]))
    if "varlen" in args.cases:
        full = bp.Problem(B, T, I, H, seed=args.seed)
        var = full.with_lengths(half_mean_lengths(B, T, args.seed))
        plan.append(("varlen", [("main", var), ("full", full)]))
    rows, varlen = [], []
    for k, (kind, variants) in enumerate(plan, 1):
        for mode in args.modes:
            t0, load = time.perf_counter(), loadavg()
            res = bench.time_case(variants, mode)
            prob = variants[0][1]
            row = bench.summarize_case(kind, prob, mode, res["main"])
            row["loadavg_before"] = load
            rows.append(row)
            if kind == "varlen":
                full_res = res["full"]
                ratios = {n: r["ms_min"] / full_res[n]["ms_min"]
                          for n, r in res["main"].items()
                          if r.get("status") == "ok" and full_res.get(n, {}).get("status") == "ok"}
                varlen.append({"mode": mode, "label": prob_label(prob),
                               "mean_length": float(np.mean(prob.lengths)), "T": prob.T,
                               "lengths": prob.lengths.tolist(), "ratio": ratios,
                               "full": {n: r for n, r in full_res.items()}})
            g = row["impls"]["grucy"]
            peers = "  ".join(f"{n} x{s:.2f}" for n, s in row["speedup"].items())
            log(f"  [{k}/{len(plan)}] {row['label']:>28} {mode:5} grucy {g['ms_min']:9.3f} ms "
                f"({g['repeats']} reps)  {peers}  ({time.perf_counter() - t0:.1f} s)")
    return rows, varlen


def run_scaling(bench, shapes):
    """1 thread vs bench.threads threads, training step, grucy (and torch for context)."""
    log = bench.log
    n = bench.threads
    if n < 2:
        return {"skipped": f"needs at least 2 threads, the run uses {n}"}
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return {"skipped": "needs threadpoolctl to limit BLAS threads"}
    ctl = ThreadpoolController()
    restore = ctl.limit(limits=n, user_api="blas")
    bp = bench.bp
    # The two largest by FLOPs, which are proportional to B*T*H*(I+H).
    biggest = sorted(shapes, key=lambda s: s[0] * s[1] * s[3] * (s[2] + s[3]))[-2:]
    out = {"threads": [1, n], "shapes": []}
    try:
        # The BLAS peak with 1 and n threads: what the machine itself gives.
        for k in (1, n):
            ctl.limit(limits=k, user_api="blas")
            out[f"sgemm_gflops_{k}"] = max(gemm_peak(bench.args.gemm_size, 3).values())
        out["sgemm_scaling"] = out[f"sgemm_gflops_{n}"] / out["sgemm_gflops_1"]
        for shape in biggest:
            prob = bp.Problem(*shape, seed=bench.args.seed)
            t0 = time.perf_counter()
            entries, impls = [], []
            for k in (1, n):
                g = bench.subject(prob, bench.threads)
                impls.append(g)

                def set_grucy(k=k):
                    bench.grucy.set_num_threads(k)
                    ctl.limit(limits=k, user_api="blas")
                entries.append(Entry(("grucy", k), g.train_step, set_grucy))
            if "torch" in bench.available_peers("train") and not bench.args.quick:
                import torch
                for k in (1, n):
                    tp = bp.TorchPeer(prob, bench.threads)
                    impls.append(tp)
                    entries.append(Entry(("torch", k), tp.train_step,
                                         lambda k=k: torch.set_num_threads(k)))
            times = measure(entries, bench.target, bench.min_repeats, order=bench.args.order)
            for impl in impls:
                impl.reset()
            row = {"label": prob_label(prob), "B": shape[0], "T": shape[1], "I": shape[2],
                   "H": shape[3], "impls": {}}
            for (name, k), ts in times.items():
                row["impls"].setdefault(name, {})[str(k)] = stats(ts)
            for name, d in row["impls"].items():
                d["speedup"] = d["1"]["ms_min"] / d[str(n)]["ms_min"]
            out["shapes"].append(row)
            log(f"  scaling {row['label']}: " + "  ".join(
                f"{name} x{d['speedup']:.2f}" for name, d in row["impls"].items())
                + f"  ({time.perf_counter() - t0:.1f} s)")
    finally:
        bench.grucy.set_num_threads(n)
        restore.restore_original_limits()
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(n)
    return out


def run_streaming(bench):
    """Per-call time of one step at B=1: grucy's streaming API and the one-step peers."""
    bp, log = bench.bp, bench.log
    I, H = bench.args.stream_size
    steps = 100 if bench.args.quick else 200
    prob = bp.Problem(1, steps, I, H, seed=bench.args.seed)
    xs = prob.x[:, 0, :].copy()
    runners, notes = bp.stream_runners(I, H, np.float32, prob.state, xs, bench.threads,
                                       bench.available_peers())
    out = {"B": 1, "I": I, "H": H, "steps_per_sample": steps, "impls": {}, "notes": notes}
    # Reference: the whole sequence through grucy's forward.
    y_ref, _ = bench.subject(prob, bench.threads).layer.forward(prob.x, training=False)
    y_ref = y_ref[:, 0, :]
    entries = []
    for r in runners:
        try:
            err, _ = max_rel_diff({"y": r.outputs()}, {"y": y_ref})
        except Exception as exc:
            out["impls"][r.name] = {"status": "error", "detail": f"{type(exc).__name__}: {exc}"}
            continue
        tol = bench.tol(np.float32)
        res = out["impls"][r.name] = {"api": r.detail, "max_rel_diff": err, "check_tol": tol}
        if not err <= tol:
            res["status"] = "mismatch"
            res["detail"] = f"disagrees with grucy.forward: {err:.3g} > {tol:g}; not timed"
            bench.failures.append(f"streaming {r.name}: {res['detail']}")
            continue
        res["status"] = "ok"
        entries.append(Entry(r.name, r.run, calls=steps))
    times = measure(entries, bench.target, max(bench.min_repeats, 10), order=bench.args.order)
    for name, ts in times.items():
        out["impls"][name].update({"us_min": min(ts) * 1e6,
                                   "us_median": statistics.median(ts) * 1e6,
                                   "repeats": len(ts)})
    log("  streaming: " + "  ".join(f"{n} {r['us_min']:.1f} us"
                                    for n, r in out["impls"].items() if "us_min" in r))
    return out


# -- peak memory ------------------------------------------------------------------------
def _proc_status(key):
    """A size from /proc/self/status in bytes (VmRSS, VmHWM), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Reset the kernel's peak-RSS mark (VmHWM, ru_maxrss) to the current RSS (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(spec):
    """Run in a fresh process: peak memory of one training step; prints one JSON line.

    spec = "impl:BxTxIxH:dtype:threads:seed".  Imports, builds the layer and data, runs one
    training step of a tiny problem (thread pools, BLAS buffers, lazy imports), then
    resets the peak-RSS mark and runs one step of the real problem.  Reports the peak RSS
    above the RSS just before the step, and for numpy-based implementations the peak of
    memory traced by tracemalloc (numpy reports its array buffers to it) during the step.
    Parameter gradient buffers exist before the step for every implementation (grucy's
    from construction, torch's allocated here), as in a training loop after its first
    step; the input gradient is allocated by the step in both.
    """
    import resource
    import tracemalloc

    from . import _bench_peers as bp

    impl, shape, dtype, threads, seed = spec.split(":")
    shape, threads = _shape(shape), int(threads)
    cls = bp.SUBJECT if impl == "grucy" else bp.PEERS[impl]
    if impl == "grucy":
        import grucy
        grucy.set_num_threads(threads)
    tiny = cls(bp.Problem(2, 3, 4, 5, dtype=dtype, seed=1), threads)
    tiny.train_step()
    tiny.train_step()
    prob = bp.Problem(*shape, dtype=dtype, seed=int(seed))
    peer = cls(prob, threads)
    if hasattr(peer, "allocate_grads"):
        peer.allocate_grads()  # parameter gradients exist before the step, as grucy's
    del tiny
    gc.collect()
    exact = _reset_peak_rss()
    rss0 = _proc_status("VmRSS")
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    traced = impl in ("grucy", "numpy")
    if traced:
        tracemalloc.start()
    peer.train_step()
    traced_peak = tracemalloc.get_traced_memory()[1] if traced else None
    if traced:
        tracemalloc.stop()
    hwm = _proc_status("VmHWM") if exact else None
    maxrss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = (hwm - rss0) if (exact and hwm is not None and rss0 is not None) \
        else maxrss1 - maxrss0
    inputs = prob.x.nbytes + prob.dy.nbytes
    params = sum(v.nbytes for v in prob.state.values())
    print(json.dumps({"impl": impl, "rss_peak_mib": peak / 2**20,
                      "rss_method": "VmHWM reset" if exact else "ru_maxrss delta",
                      "traced_peak_mib": None if traced_peak is None else traced_peak / 2**20,
                      "inputs_mib": inputs / 2**20, "params_mib": params / 2**20}))
    return 0


def run_memory(bench, shapes):
    """Peak memory of one training step per implementation and shape, fresh processes."""
    import grucy

    log = bench.log
    impls = ["grucy"] + [n for n in ("torch", "numpy") if n in bench.available_peers("train")]
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(grucy.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in env.get("PYTHONPATH", "")
                                                      .split(os.pathsep) if p])
    if bench.args.quick:  # the two largest: where memory matters
        shapes = sorted(shapes, key=lambda s: s[0] * s[1] * s[3] * (s[2] + s[3]))[-2:]
    rows = []
    for shape in shapes:
        row = {"label": "x".join(map(str, shape)), "impls": {}}
        for impl in impls:
            spec = f"{impl}:{'x'.join(map(str, shape))}:float32:{bench.threads}:{bench.args.seed}"
            cmd = [sys.executable, "-m", "grucy.benchmark", "--memory-child", spec]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                      timeout=600)
                line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
                if proc.returncode != 0 or not line.startswith("{"):
                    raise RuntimeError(f"exit {proc.returncode}: "
                                       f"{(proc.stderr or proc.stdout).strip()[-300:]}")
                row["impls"][impl] = json.loads(line)
            except (OSError, RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                row["impls"][impl] = {"error": str(exc)}
                log(f"  memory {impl} {row['label']}: {exc}")
        g, t = row["impls"].get("grucy", {}), row["impls"].get("torch", {})
        if "rss_peak_mib" in g and "rss_peak_mib" in t and t["rss_peak_mib"] > 0:
            row["grucy_over_torch"] = g["rss_peak_mib"] / t["rss_peak_mib"]
        rows.append(row)
        log(f"  memory {row['label']}: " + "  ".join(
            f"{n} {r['rss_peak_mib']:.1f} MiB" for n, r in row["impls"].items()
            if "rss_peak_mib" in r))
    return {"method": "peak RSS above the RSS before one training step (after a warm-up "
                      "step on a tiny problem), fresh process per measurement",
            "shapes": rows}


# -- targets of issue 3 --------------------------------------------------------------
def evaluate_targets(rows, scaling, varlen, memory, streaming, core_shapes):
    """For each target: measured figure, threshold, met / missed / not measured."""
    targets = []

    def add(name, text, value, op, threshold, where="", why=""):
        if value is None:
            status = "not measured"
        else:
            status = "met" if (value >= threshold if op == ">=" else value <= threshold) \
                else "missed"
        targets.append({"name": name, "target": text, "measured": value, "op": op,
                        "threshold": threshold, "where": where, "status": status,
                        "note": why})

    note = "" if core_shapes == DEFAULT_SHAPES else "over the shapes of this run"
    core = {m: [r for r in rows if r["kind"] == "core" and r["mode"] == m] for m in MODES}
    # 1. training >= 1.3x the fastest of torch and numpy, every shape
    vals = []
    for r in core["train"]:
        rivals = [r["speedup"][n] for n in ("torch", "numpy") if n in r["speedup"]]
        if rivals:
            vals.append((min(rivals), r["label"]))
    worst = min(vals) if vals else (None, "")
    add("train_vs_fastest", "training step vs the fastest of PyTorch and NumPy, every shape "
        "(worst shape)", worst[0], ">=", 1.3, worst[1], note)
    # 2. geometric mean over the five shapes vs torch >= 3
    sp = [r["speedup"]["torch"] for r in core["train"] if "torch" in r["speedup"]]
    add("train_geomean_torch", "training step vs PyTorch, geometric mean over the shapes",
        geomean(sp) if sp and len(sp) == len(core["train"]) else None, ">=", 3.0,
        f"{len(sp)} shapes", note)
    # 3. inference at least as fast as ONNX Runtime, every shape
    vals = [(r["speedup"]["onnxruntime"], r["label"]) for r in core["infer"]
            if "onnxruntime" in r["speedup"]]
    worst = min(vals) if vals else (None, "")
    add("infer_vs_onnxruntime", "inference vs ONNX Runtime, every shape (worst shape)",
        worst[0], ">=", 1.0, worst[1], note)
    # 4. training at >= 75% of SGEMM on the two largest shapes
    big = sorted(core["train"], key=lambda r: r["gflop"])[-2:]
    vals = [(r["impls"]["grucy"].get("pct_gemm"), r["label"]) for r in big]
    vals = [v for v in vals if v[0] is not None]
    worst = min(vals) if vals else (None, "")
    add("train_pct_sgemm", "training GFLOP/s as % of the run's SGEMM peak, two largest "
        "shapes (worst)", worst[0], ">=", 75.0, worst[1], note)
    # 5. 2 threads >= 1.6x 1 thread on the two largest shapes
    vals = [(s["impls"]["grucy"]["speedup"], s["label"]) for s in scaling.get("shapes", [])]
    worst = min(vals) if vals else (None, "")
    add("thread_scaling", f"training, {scaling.get('threads', [1, 2])[-1]} threads vs 1, "
        "two largest shapes (worst)", worst[0], ">=", 1.6, worst[1],
        scaling.get("skipped", ""))
    # 6. variable lengths: mean T/2 costs <= 0.6 of full length
    vals = [(v["ratio"]["grucy"], f"{v['mode']} {v['label']}") for v in varlen
            if "grucy" in v["ratio"]]
    worst = max(vals) if vals else (None, "")
    add("varlen_cost", "batch with mean length T/2 / same batch at full length (worst "
        "mode)", worst[0], "<=", 0.6, worst[1])
    # 7. peak memory of a training step <= PyTorch's
    vals = [(r["grucy_over_torch"], r["label"]) for r in memory.get("shapes", [])
            if "grucy_over_torch" in r]
    worst = max(vals) if vals else (None, "")
    add("memory_vs_torch", "peak memory of a training step / PyTorch's, every shape "
        "(worst)", worst[0], "<=", 1.0, worst[1])
    # 8. streaming per-call overhead <= 5 us at B=1, H=128
    st = streaming.get("impls", {}).get("grucy stream.step", {})
    why = streaming.get("notes", {}).get("grucy stream.step", "")
    size = f", I={streaming['I']}, H={streaming['H']}" if streaming else ""
    add("stream_overhead_us", f"streaming step per call at B=1{size} (microseconds)",
        st.get("us_min"), "<=", 5.0, "grucy stream.step" if st else "", why)
    return targets


def geomean(values):
    return math.exp(sum(map(math.log, values)) / len(values))


# -- output ------------------------------------------------------------------------------
def text_table(head, body, left=1):
    """Columns padded to width; the first ``left`` columns left-aligned, others right."""
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(head), "  ".join("-" * w for w in widths)] +
                     [line(b) for b in body])


def markdown_table(head, body, left=1):
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join(":---" if i < left else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(out)


def _ms(r):
    if r is None:
        return "-"
    if r.get("status") == "ok" and "ms_min" in r:
        return f"{_fmt(r['ms_min'])} / {_fmt(r['ms_median'])}"
    return {"unsupported": "unsupported", "error": "error", "mismatch": "MISMATCH",
            "missing": "missing"}.get(r.get("status"), "-")


def _threads(n):
    return f"{n} thread{'s' if n != 1 else ''}"


def _mb(x):
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def _fmt(ms):
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def mode_table(rows, mode, peers):
    """The main table of one mode: times of every implementation and the ratios."""
    rows = [r for r in rows if r["mode"] == mode]
    peers = [p for p in peers if any(p in r["impls"] for r in rows)]
    head = (["case", "reps", "grucy ms"] + [f"{p} ms" for p in peers]
            + [f"x {p}" for p in peers] + ["x fastest", "GFLOP/s", "% GEMM", "check"])
    body = []
    for r in rows:
        g = r["impls"]["grucy"]
        cells = [r["label"], str(g["repeats"]), _ms(g)]
        cells += [_ms(r["impls"].get(p)) for p in peers]
        cells += [f"{r['speedup'][p]:.2f}" if p in r["speedup"] else "-" for p in peers]
        cells.append(f"{r['speedup_vs_fastest']:.2f} {r['fastest_peer']}"
                     if "fastest_peer" in r else "-")
        cells.append(f"{g['gflops']:.1f}")
        cells.append(f"{g['pct_gemm']:.1f}" if "pct_gemm" in g else "-")
        cells.append("-" if r["max_rel_diff"] is None else
                     f"{'ok' if r['checks_ok'] else 'FAIL'} {r['max_rel_diff']:.0e}")
        body.append(cells)
    return text_table(head, body)


def report_lines(doc):
    """The printed report."""
    m, out = doc["machine"], []
    opts = doc["options"]
    title = "grucy benchmark"
    if opts["self_test"]:
        title += " (SELF-TEST: the reference timed as grucy)"
    out.append(f"{title}{', --quick' if opts['quick'] else ''}: {doc['command']}")
    flags = ", ".join(m["cpu_flags"]) or "none of avx2/fma/avx512f"
    out.append(f"CPU      {m['cpu']} ({flags}); {m['usable_cpus']} usable of "
               f"{m['logical_cpus']} logical CPUs")
    out.append(f"Python   {m['python']} on {m['platform']}")
    out.append(f"numpy    {m['numpy']}   scipy {m['scipy']}   grucy {m['grucy']} "
               f"(openmp={m['grucy_openmp']}, OMP_WAIT_POLICY={m['omp_wait_policy']}, "
               f"GOMP_SPINCOUNT={m.get('gomp_spincount')}: shared by every OpenMP user here)")
    out.append(f"threads  {m['threads']} for grucy and every peer"
               + ("" if opts["threads"] else " (grucy's default; BLAS left as loaded)"))
    for b in m["blas"] or []:
        if b["user_api"] == "openmp":
            out.append(f"OpenMP   threads={b['num_threads']} ({b['library']})")
        else:
            out.append(f"BLAS     {b['internal_api']} {b['version']} {b['architecture']} "
                       f"threads={b['num_threads']} ({b['library']})")
    if m["blas"] is None:
        out.append("BLAS     (install threadpoolctl to list BLAS libraries and threads)")
    if m.get("loadavg_start") is not None:
        out.append(f"load     1-min load average {m['loadavg_start']:.2f} at start, "
                   f"{m['loadavg_end']:.2f} at end, on {m['usable_cpus']} CPUs")
    for dt, g in doc["gemm"].items():
        out.append(f"GEMM     {g['n']}^3 {dt}: numpy {g['numpy_gflops']:.1f}, scipy "
                   f"{g['scipy_gflops']:.1f} GFLOP/s -> peak {g['gflops']:.1f} GFLOP/s "
                   f"(best of start and end of run)")
    out.append("peers    " + "; ".join(f"{n}: {s['detail']}" for n, s in doc["peers"].items()))
    rows = doc["results"]
    peers = [n for n in doc["peers"]]
    order = opts.get("order", "blocked")
    for mode in MODES:
        if any(r["mode"] == mode for r in rows):
            out += ["", f"{MODE_TITLES[mode]}: ms min / median of {order} repeats; "
                        f"x PEER = PEER min / grucy min (> 1: grucy faster)",
                    mode_table(rows, mode, peers)]
    notes = sorted({f"{n}: {r['detail']}" for row in rows for n, r in row["impls"].items()
                    if r.get("status") in ("unsupported", "error", "mismatch")})
    if notes:
        out += ["notes:"] + [f"  {n}" for n in notes]
    if doc.get("varlen"):
        out += ["", "Variable lengths: time of the batch with mean length T/2 / time of the "
                    "same batch at full length (min times)"]
        impls = sorted({n for v in doc["varlen"] for n in v["ratio"]},
                       key=lambda n: (n != "grucy", n))
        body = [[f"{v['mode']} {v['label']}"] + [f"{v['ratio'][n]:.2f}" if n in v["ratio"]
                                                 else "-" for n in impls]
                for v in doc["varlen"]]
        out.append(text_table(["case"] + impls, body))
    sc = doc.get("scaling") or {}
    if sc.get("shapes"):
        n = sc["threads"][-1]
        out += ["", f"Thread scaling, training step: ms with 1 and {n} threads (min), "
                    f"speedup; SGEMM {doc['gemm']['float32']['n']}^3 scales "
                    f"x{sc['sgemm_scaling']:.2f} "
                    f"({sc['sgemm_gflops_1']:.0f} -> {sc[f'sgemm_gflops_{n}']:.0f} GFLOP/s)"]
        body = []
        for s in sc["shapes"]:
            for name, d in s["impls"].items():
                body.append([s["label"], name, f"{d['1']['ms_min']:.1f}",
                             f"{d[str(n)]['ms_min']:.1f}", f"{d['speedup']:.2f}"])
        out.append(text_table(["shape", "impl", "1 thread", f"{n} threads", "speedup"],
                              body, left=2))
    elif sc.get("skipped"):
        out += ["", f"Thread scaling: not measured ({sc['skipped']})"]
    st = doc.get("streaming")
    if st:
        out += ["", f"Streaming, B=1, I={st['I']}, H={st['H']}: microseconds per step call "
                    f"(min / median over samples of {st['steps_per_sample']} calls)"]
        body = []
        for name, r in st["impls"].items():
            t = (f"{r['us_min']:.1f} / {r['us_median']:.1f}" if "us_min" in r
                 else r.get("status", "?"))
            body.append([name, t, r.get("api", r.get("detail", ""))])
        for name, why in st["notes"].items():
            body.append([name, "-", why])
        out.append(text_table(["implementation", "us/call", "API"], body, left=1))
    mem = doc.get("memory")
    if mem:
        out += ["", "Peak memory of one training step, MiB above the memory before it "
                    "(fresh process each; see bench/README.md)"]
        impls = sorted({n for r in mem["shapes"] for n in r["impls"]},
                       key=lambda n: (n != "grucy", n))
        body = []
        for r in mem["shapes"]:
            cells = [r["label"]]
            for n in impls:
                d = r["impls"].get(n, {})
                cells.append(_mb(d["rss_peak_mib"]) if "rss_peak_mib" in d else "error")
            g = r["impls"].get("grucy", {})
            cells.append(_mb(g["traced_peak_mib"]) if g.get("traced_peak_mib") is not None
                         else "-")
            cells.append(f"{r['grucy_over_torch']:.2f}" if "grucy_over_torch" in r else "-")
            cells.append(_mb(g.get("inputs_mib", 0) + g.get("params_mib", 0)))
            body.append(cells)
        out.append(text_table(["shape"] + [f"{n} RSS" for n in impls]
                              + ["grucy numpy-traced", "grucy/torch", "inputs+params"], body))
    out += ["", "Targets (issue 3)"]
    body = []
    for t in doc["targets"]:
        v = t["measured"]
        body.append([t["target"], "-" if v is None else f"{v:.3g}",
                     f"{t['op']} {t['threshold']:g}", t["status"].upper()
                     if t["status"] != "not measured" else "not measured",
                     " ".join(x for x in (t["where"], t["note"]) if x)])
    out.append(text_table(["target", "measured", "threshold", "status", "where / note"],
                          body, left=1))
    if doc["failures"]:
        out += ["", "CHECK FAILURES (these peers were not timed):"]
        out += [f"  {f}" for f in doc["failures"]]
    out.append("")
    out.append(f"Ratios from minimum times; machine shared and noisy: compare ratios, not "
               f"absolute times.  Total {doc['elapsed_seconds']:.0f} s.")
    if busy_warning(m):
        out.append(busy_warning(m))
    return out


def markdown_lines(doc):
    """The README table: core shapes, training and inference, and the targets."""
    m = doc["machine"]
    rows = [r for r in doc["results"] if r["kind"] == "core"]
    by = {(r["label"], r["mode"]): r for r in rows}
    labels = list(dict.fromkeys(r["label"] for r in rows))
    gemm = doc["gemm"].get("float32", {})
    out = [f"Machine: {m['cpu']}, {m['usable_cpus']} CPUs ({', '.join(m['cpu_flags'])}); "
           f"numpy {m['numpy']}, scipy {m['scipy']}; {_threads(m['threads'])} for every "
           f"implementation; SGEMM {gemm.get('n')}^3 peak in the same run "
           f"{gemm.get('gflops', float('nan')):.0f} GFLOP/s. Peers: "
           + ", ".join(f"{n} {s['detail']}" for n, s in doc["peers"].items()) + ".",
           "", f"Command: `{doc['command']}` ({doc['date'][:10]}). Times are the minimum "
               f"of {doc['options'].get('order', 'blocked')} repeats, in ms; speedup = "
               f"peer time / grucy time.", ""]

    def t(r, n):
        d = r["impls"].get(n) if r else None
        return _fmt(d["ms_min"]) if d and d.get("status") == "ok" else "-"

    def pct(r):
        p = r["impls"]["grucy"].get("pct_gemm") if r else None
        return "-" if p is None else f"{p:.0f}%"

    def ratio(r, key, peer=None):
        v = (r or {}).get(key)
        if peer is not None:
            v = (v or {}).get(peer)
        return "-" if v is None else f"{v:.2f}x"

    head = ["B x T x I x H", "train: grucy", "PyTorch", "NumPy", "speedup vs fastest",
            "% SGEMM", "infer: grucy", "ONNX Runtime", "PyTorch", "speedup vs ONNX RT"]
    body = []
    for label in labels:
        tr, inf = by.get((label, "train")), by.get((label, "infer"))
        body.append([
            label, t(tr, "grucy"), t(tr, "torch"), t(tr, "numpy"),
            ratio(tr, "speedup_vs_fastest"), pct(tr),
            t(inf, "grucy"), t(inf, "onnxruntime"), t(inf, "torch"),
            ratio(inf, "speedup", "onnxruntime")])
    out.append(markdown_table(head, body))
    out += ["", markdown_table(
        ["target (issue 3)", "measured", "threshold", "status"],
        [[t_["target"], "-" if t_["measured"] is None else f"{t_['measured']:.3g}",
          f"{t_['op']} {t_['threshold']:g}", t_["status"]] for t_ in doc["targets"]])]
    if busy_warning(m):
        out += ["", busy_warning(m)]
    return out


def write_atomic(path, data):
    """Write text or bytes to ``path`` atomically (grucy's file writer), making its
    directory first."""
    from .io import _atomic_write

    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _atomic_write(path, [data.encode("utf-8") if isinstance(data, str) else data])


def plot_speedups(doc, path):
    """Bar chart of grucy's speedup over each peer on the core shapes; False without
    matplotlib.  Uses the Agg canvas directly, so no pyplot state or backend is touched."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import NullFormatter, ScalarFormatter
    except ImportError:
        return False
    import io

    rows = [r for r in doc["results"] if r["kind"] == "core"]
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    fig = Figure(figsize=(6.5 * len(modes), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    targets = {"train": [(1.3, "target vs fastest")], "infer": [(1.0, "")]}
    for k, mode in enumerate(modes, 1):
        ax = fig.add_subplot(1, len(modes), k)
        mr = [r for r in rows if r["mode"] == mode]
        peers = [p for p in doc["peers"] if any(p in r["speedup"] for r in mr)]
        width = 0.8 / max(len(peers), 1)
        for j, p in enumerate(peers):
            xs = [i + (j - (len(peers) - 1) / 2) * width for i in range(len(mr))]
            bars = ax.bar(xs, [r["speedup"].get(p, 0) for r in mr], width, label=f"vs {p}")
            ax.bar_label(bars, fmt="%.2g", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        for value, text in targets[mode]:
            ax.axhline(value, color="red", linestyle="--", linewidth=0.8,
                       label=text or None)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(range(len(mr)), [r["label"] for r in mr], rotation=20, fontsize=8)
        ax.set_ylabel("speedup of grucy (peer min time / grucy min time)")
        ax.set_title(f"{MODE_TITLES[mode]}, float32, {_threads(doc['machine']['threads'])}",
                     fontsize=10)
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_atomic(path, buf.getvalue())
    return True


# -- main -----------------------------------------------------------------------------------
def _import_grucy():
    try:
        import grucy
        grucy.GRU  # noqa: B018 -- the compiled extension must be importable
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"grucy bench: cannot import grucy.GRU ({exc}); build the "
                         f"extension (pip install -e . --no-build-isolation, or python "
                         f"setup.py build_ext --inplace with PYTHONPATH=src)") from None
    return grucy


def main(argv=None, *, prog=None, json_default=None):
    """Run the benchmark; ``argv`` defaults to ``sys.argv[1:]``.

    Returns the exit status: 0, or 1 when a peer's results disagreed with grucy's (that
    peer is then not timed).  ``prog`` names the command in help and report;
    ``json_default`` replaces the default --json path (bench/bench_gru.py anchors it to
    its own directory).
    """
    prog = prog or "grucy bench"
    parser = build_parser(prog)
    if json_default is not None:
        parser.set_defaults(json=json_default)
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child(args.memory_child)
    grucy = _import_grucy()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    cmd_args = sys.argv[1:] if argv is None else list(argv)
    command = " ".join([prog] + cmd_args)
    if args.profile:
        from ._bench_profile import run_profile
        return run_profile(args, grucy, log, command)

    shapes = args.shapes or DEFAULT_SHAPES
    limiter = limit_threads(args.threads, grucy, log)
    bench = Bench(args, grucy, log)
    gemm_repeats = 3 if args.quick else 5
    dtypes = ["float32"] + (["float64"] if "float64" in args.cases else [])
    t_start = time.perf_counter()
    try:
        load_start = loadavg()
        log(f"grucy bench: GEMM peak ({', '.join(dtypes)}) ...")
        gemm_start = {dt: gemm_peak(args.gemm_size, gemm_repeats, dt) for dt in dtypes}
        for dt, g in gemm_start.items():
            bench.gemm[dt] = max(g.values())
        machine = machine_info(grucy, bench.threads)
        machine["loadavg_start"] = load_start
        if load_start is not None and load_start > 0.5 * (machine["usable_cpus"] or 1):
            log(f"grucy bench: note: load average {load_start:.2f} before starting; other "
                f"processes compete for the CPUs")
        log("grucy bench: peers: " + "; ".join(f"{n}: {s['detail']}"
                                                for n, s in bench.peer_status.items()))
        rows, varlen = run_timed_groups(bench, shapes)
        t0 = time.perf_counter()
        scaling = run_scaling(bench, shapes) if "scaling" in args.cases else {}
        streaming = run_streaming(bench) if "streaming" in args.cases else {}
        memory = run_memory(bench, shapes) if "memory" in args.cases else {}
        log(f"grucy bench: scaling, streaming and memory took {time.perf_counter() - t0:.0f} s")
        gemm_end = {dt: gemm_peak(args.gemm_size, gemm_repeats, dt) for dt in dtypes}
        machine["loadavg_end"] = loadavg()
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    elapsed = time.perf_counter() - t_start

    # The peak is the best GEMM of the run; rescale percentages if the end beat the start.
    gemm = {}
    for dt in dtypes:
        best = {k: max(gemm_start[dt][k], gemm_end[dt][k]) for k in gemm_start[dt]}
        gemm[dt] = {"n": args.gemm_size, "numpy_gflops": best["numpy"],
                    "scipy_gflops": best["scipy"], "gflops": max(best.values()),
                    "start": gemm_start[dt], "end": gemm_end[dt]}
    for r in rows:
        for d in r["impls"].values():
            if "gflops" in d:
                d["pct_gemm"] = 100.0 * d["gflops"] / gemm[r["dtype"]]["gflops"]
    targets = evaluate_targets(rows, scaling, varlen, memory, streaming, shapes)
    doc = {
        "benchmark": "grucy", "format": 2,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "options": {"quick": args.quick, "threads": args.threads, "modes": args.modes,
                    "peers": args.peers, "cases": args.cases,
                    "shapes": ["x".join(map(str, s)) for s in shapes],
                    "extra_shape": "x".join(map(str, args.extra_shape)),
                    "target_seconds": bench.target, "min_repeats": bench.min_repeats,
                    "order": args.order, "seed": args.seed, "self_test": args.self_test,
                    "argv": cmd_args},
        "machine": machine, "gemm": gemm,
        "peers": {n: s for n, s in bench.peer_status.items()},
        "flops_formula": "train = 18*rows*H*(I_k+H) per layer and direction, rows = T*B "
                         "or sum(lengths); infer = train/3",
        "results": rows, "varlen": varlen, "scaling": scaling, "streaming": streaming,
        "memory": memory, "targets": targets, "failures": bench.failures,
        "elapsed_seconds": elapsed,
    }
    print("\n".join(report_lines(doc)))
    if args.markdown:
        md = "\n".join(markdown_lines(doc)) + "\n"
        if args.markdown == "-":
            print("\n" + md, end="")
        else:
            write_atomic(args.markdown, md)
            log(f"grucy bench: wrote {args.markdown}")
    if args.json not in ("", "-"):
        write_atomic(args.json, json.dumps(doc, indent=1) + "\n")
        log(f"grucy bench: wrote {args.json}")
        plot = args.plot or os.path.splitext(args.json)[0] + ".png"
    else:
        plot = args.plot
    if plot and plot != "-":
        if plot_speedups(doc, plot):
            log(f"grucy bench: wrote {plot}")
        else:
            log("grucy bench: no plot (matplotlib is not installed)")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m grucy.benchmark"))
