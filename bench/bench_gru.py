#!/usr/bin/env python
"""Speed of grucy.GRU against the NumPy baseline grucy.reference.GRU.

Both layers get the same weights (``load_state_dict``) and the same data: float32,
time-major, one layer, one direction.  For each shape (B, T, I, H) two modes are timed:

* ``train``: ``forward(x, training=True)`` then ``backward(dy)`` with a fixed random ``dy``;
* ``infer``: ``forward(x, training=False)``.

Each case is warmed up, then repeated (at least ``--min-repeats`` times and about
``--target-seconds`` in total), grucy and the baseline alternating so that machine noise
hits both alike.  Speedup is the baseline's median time over grucy's.  A large float32 GEMM
is timed in the same run as the machine's practical peak; grucy's GFLOP/s (from its minimum
time) is reported as a fraction of it.  FLOPs of a training step = 18*T*B*H*(I+H),
inference = a third of that (DESIGN.md section 3).

Run from the repository root::

    python bench/bench_gru.py            # full run, a few minutes on 2 cores
    python bench/bench_gru.py --quick    # smoke test, under a minute

See bench/README.md for how to read the output.
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
import sys
import tempfile
import time

import numpy as np

DEFAULT_SHAPES = [  # (B, T, I, H)
    (1, 100, 32, 64),
    (16, 100, 64, 128),
    (32, 100, 128, 256),
    (64, 50, 256, 512),
    (32, 50, 512, 1024),
]
MODES = ("train", "infer")
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_JSON = os.path.join(HERE, "results", "bench_gru.json")
# Outputs of the two layers must agree to float32 accuracy; anything past this is reported
# as a mismatch (the timings of a wrong kernel mean nothing).
AGREE_TOL = 1e-3


# -- options --------------------------------------------------------------------------
def parse_shapes(text):
    """``1,3`` (1-based indices into the default list) or ``16x100x64x128`` (BxTxIxH)."""
    shapes = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        if "x" in item:
            parts = item.split("x")
            if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
                raise argparse.ArgumentTypeError(
                    f"shape {item!r} is not BxTxIxH with positive integers")
            shapes.append(tuple(int(p) for p in parts))
        elif item.isdigit() and 1 <= int(item) <= len(DEFAULT_SHAPES):
            shapes.append(DEFAULT_SHAPES[int(item) - 1])
        else:
            raise argparse.ArgumentTypeError(
                f"{item!r} is neither an index 1..{len(DEFAULT_SHAPES)} nor BxTxIxH")
    if not shapes:
        raise argparse.ArgumentTypeError("no shapes given")
    return shapes


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser():
    shape_list = ", ".join(f"{i}: {'x'.join(map(str, s))}"
                           for i, s in enumerate(DEFAULT_SHAPES, 1))
    p = argparse.ArgumentParser(
        description="Time grucy.GRU against the NumPy baseline grucy.reference.GRU.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Default shapes (BxTxIxH) {shape_list}.")
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats and a shorter time per case (smoke test, <1 min)")
    p.add_argument("--shapes", type=parse_shapes, default=None, metavar="LIST",
                   help="comma-separated 1-based indices into the default shapes and/or "
                        "explicit BxTxIxH shapes, e.g. '1,2' or '8x200x40x96'")
    p.add_argument("--modes", default="train,infer", metavar="LIST",
                   help="comma-separated subset of 'train,infer' (default: both)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="threads for grucy (set_num_threads) and for every BLAS in the "
                        "process (threadpoolctl); default: leave both as they are")
    p.add_argument("--json", default=DEFAULT_JSON, metavar="PATH",
                   help="where to write the results as JSON (default: %(default)s); "
                        "'-' or '' to skip")
    p.add_argument("--markdown", default=None, metavar="PATH",
                   help="also write the table as Markdown to PATH")
    p.add_argument("--target-seconds", type=float, default=None, metavar="S",
                   help="approximate time per case, both layers together "
                        "(default 1.5, 0.3 with --quick)")
    p.add_argument("--min-repeats", type=positive_int, default=None, metavar="N",
                   help="minimum timed repeats per layer and case (default 5, 3 with --quick)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and data")
    # Development only: time the reference against itself (checks the harness, and that a
    # speedup of 1.0 comes out as 1.0).
    p.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)
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
                f"unreliable, and OpenMP/BLAS threads that spin-wait suffer most. "
                f"Rerun on a quiet machine.")
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


def machine_info(grucy, threads_requested):
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
        "threads_requested": threads_requested,
        "blas": blas_info(),
    }


# -- timing ---------------------------------------------------------------------------
def sgemm_peak(n, repeats):
    """Best GFLOP/s of an n^3 float32 GEMM, through numpy and through scipy's BLAS.

    grucy's kernels call scipy's OpenBLAS, the baseline numpy's; the two may be different
    builds, so the faster of the two is taken as the machine's practical peak.
    """
    from scipy.linalg import blas as sblas

    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    af, bf = np.asfortranarray(a), np.asfortranarray(b)
    flops = 2.0 * n ** 3
    result = {}
    for name, fn in (("numpy", lambda: np.matmul(a, b, out=c)),
                     ("scipy", lambda: sblas.sgemm(1.0, af, bf))):
        fn()  # warm-up: thread pool start, page faults
        best = min(timed(fn) for _ in range(repeats))
        result[name] = flops / best / 1e9
    return result


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_pair(fn_a, fn_b, target, min_repeats, max_repeats=1000):
    """Times of fn_a and fn_b, warmed up, then run alternately.

    Returns (times_a, times_b).  The order within a pair alternates too, so neither side
    is always the one running right after the other (cache, turbo, thread wake-up).
    """
    # Warm-up: at least one call each, more for fast cases (up to ~10% of the budget).
    t_a, t_b = timed(fn_a), timed(fn_b)
    extra = min(20, int(0.1 * target / max(t_a + t_b, 1e-9)))
    for _ in range(extra):
        t_a, t_b = min(t_a, timed(fn_a)), min(t_b, timed(fn_b))
    repeats = max(min_repeats, min(max_repeats, math.ceil(target / max(t_a + t_b, 1e-9))))
    times_a, times_b = [], []
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for i in range(repeats):
            if i % 2 == 0:
                times_a.append(timed(fn_a))
                times_b.append(timed(fn_b))
            else:
                times_b.append(timed(fn_b))
                times_a.append(timed(fn_a))
    finally:
        if gc_was_enabled:
            gc.enable()
    return times_a, times_b


def max_rel_diff(pairs):
    """Largest |a - b| / max|b| over the pairs of arrays (b from the baseline)."""
    worst = 0.0
    for a, b in pairs:
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        scale = max(float(np.max(np.abs(b))), 1e-30)
        worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


def check_agreement(fast, base, x, dy):
    """One training step of each from zero gradients; relative difference of everything."""
    fast.zero_grad()
    base.zero_grad()
    y_f, h_f = fast.forward(x, training=True)
    dx_f, dh0_f = fast.backward(dy)
    y_b, h_b = base.forward(x, training=True)
    dx_b, dh0_b = base.backward(dy)
    y_fi, h_fi = fast.forward(x, training=False)
    pairs = [(y_f, y_b), (h_f, h_b), (dx_f, dx_b), (dh0_f, dh0_b), (y_fi, y_b), (h_fi, h_b)]
    pairs += [(fast.grads[k], base.grads[k]) for k in base.grads]
    return max_rel_diff(pairs)


def train_flops(B, T, I, H):
    return 18.0 * T * B * H * (I + H)


def run_case(FastGRU, BaseGRU, shape, modes, target, min_repeats, seed, peak, log):
    B, T, I, H = shape
    rng = np.random.default_rng(seed)
    base = BaseGRU(I, H, dtype=np.float32, seed=seed)
    fast = FastGRU(I, H, dtype=np.float32, seed=seed + 1)
    fast.load_state_dict(base.state_dict())
    x = rng.standard_normal((T, B, I), dtype=np.float32)
    dy = rng.standard_normal((T, B, H), dtype=np.float32)

    err = check_agreement(fast, base, x, dy)
    if not err <= AGREE_TOL:
        log(f"  WARNING: grucy and the baseline disagree on {shape}: "
            f"max relative difference {err:.3g} > {AGREE_TOL:g}")

    def train(layer):
        def step():
            layer.forward(x, training=True)
            layer.backward(dy)
        return step

    def infer(layer):
        return lambda: layer.forward(x, training=False)

    rows = []
    for mode in modes:
        make = train if mode == "train" else infer
        t0 = time.perf_counter()
        t_fast, t_base = measure_pair(make(fast), make(base), target, min_repeats)
        # Gradients accumulate across training repeats; reset so nothing grows unboundedly.
        fast.zero_grad()
        base.zero_grad()
        flops = train_flops(*shape) / (1.0 if mode == "train" else 3.0)
        fast_min, fast_med = min(t_fast), statistics.median(t_fast)
        base_min, base_med = min(t_base), statistics.median(t_base)
        gflops = flops / fast_min / 1e9
        row = {
            "B": B, "T": T, "I": I, "H": H, "shape": "x".join(map(str, shape)),
            "mode": mode,
            "repeats": len(t_fast),
            "grucy_ms_min": fast_min * 1e3, "grucy_ms_median": fast_med * 1e3,
            "numpy_ms_min": base_min * 1e3, "numpy_ms_median": base_med * 1e3,
            "speedup": base_med / fast_med,
            "speedup_min": base_min / fast_min,
            "gflop": flops / 1e9,
            "grucy_gflops": gflops,
            "numpy_gflops": flops / base_min / 1e9,
            "grucy_pct_sgemm": 100.0 * gflops / peak,
            "max_rel_diff": err,
            "grucy_ms_all": [t * 1e3 for t in t_fast],
            "numpy_ms_all": [t * 1e3 for t in t_base],
        }
        rows.append(row)
        log(f"  {row['shape']:>16} {mode:5}  {len(t_fast):4d} repeats  "
            f"grucy {fast_med * 1e3:9.2f} ms  numpy {base_med * 1e3:9.2f} ms  "
            f"x{row['speedup']:.2f}  ({time.perf_counter() - t0:.1f} s)")
    return rows


# -- output ---------------------------------------------------------------------------
COLUMNS = [  # header, row key, format
    ("B x T x I x H", "shape", "{}"),
    ("mode", "mode", "{}"),
    ("grucy ms (min)", "grucy_ms_min", "{:.3f}"),
    ("grucy ms (med)", "grucy_ms_median", "{:.3f}"),
    ("numpy ms (min)", "numpy_ms_min", "{:.3f}"),
    ("numpy ms (med)", "numpy_ms_median", "{:.3f}"),
    ("speedup (med)", "speedup", "{:.2f}x"),
    ("speedup (min)", "speedup_min", "{:.2f}x"),
    ("grucy GFLOP/s", "grucy_gflops", "{:.1f}"),
    ("% SGEMM", "grucy_pct_sgemm", "{:.1f}"),
    ("max rel diff", "max_rel_diff", "{:.1e}"),
]


def table_cells(rows):
    head = [c[0] for c in COLUMNS]
    body = [[fmt.format(r[key]) for _, key, fmt in COLUMNS] for r in rows]
    return head, body


def text_table(rows):
    head, body = table_cells(rows)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    left = {0, 1}

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(b) for b in body]
    return "\n".join(out)


def markdown_table(rows):
    head, body = table_cells(rows)
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join(":---" if i < 2 else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(out)


def geomean(values):
    return math.exp(sum(map(math.log, values)) / len(values))


def summarize(rows):
    summary = {}
    for mode in MODES:
        sp = [r["speedup"] for r in rows if r["mode"] == mode]
        if sp:
            summary[mode] = {
                "geomean_speedup": geomean(sp),
                "min_speedup": min(sp),
                "max_speedup": max(sp),
                "geomean_speedup_min": geomean(
                    [r["speedup_min"] for r in rows if r["mode"] == mode]),
                "n_shapes": len(sp),
            }
    summary["max_rel_diff"] = max(r["max_rel_diff"] for r in rows)
    return summary


def summary_lines(summary):
    lines = []
    for mode, label in (("train", "training"), ("infer", "inference")):
        s = summary.get(mode)
        if s:
            lines.append(f"{label:9} speedup over {s['n_shapes']} shape(s): geometric mean "
                         f"{s['geomean_speedup']:.2f}x, min {s['min_speedup']:.2f}x, "
                         f"max {s['max_speedup']:.2f}x  (geometric mean of min-time "
                         f"speedups {s['geomean_speedup_min']:.2f}x)")
    ok = summary["max_rel_diff"] <= AGREE_TOL
    lines.append(f"outputs agree: {'yes' if ok else 'NO'} (max relative difference "
                 f"{summary['max_rel_diff']:.1e}, tolerance {AGREE_TOL:g})")
    return lines


def machine_lines(m, peak):
    flags = ", ".join(m["cpu_flags"]) or "none of avx2/fma/avx512f"
    lines = [
        f"CPU      {m['cpu']} ({flags}); {m['usable_cpus']} usable of "
        f"{m['logical_cpus']} logical CPUs",
        f"Python   {m['python']} on {m['platform']}",
        f"numpy    {m['numpy']}   scipy {m['scipy']}   grucy {m['grucy']}",
        f"grucy    openmp_enabled={m['grucy_openmp']}  threads={m['grucy_threads']}"
        + (f"  (--threads {m['threads_requested']})" if m["threads_requested"] else ""),
    ]
    if m["blas"] is None:
        lines.append("BLAS     (install threadpoolctl to list BLAS libraries and threads)")
    else:
        for b in m["blas"]:
            if b["user_api"] == "openmp":
                lines.append(f"OpenMP   threads={b['num_threads']} ({b['library']})")
            else:
                lines.append(f"BLAS     {b['internal_api']} {b['version']} "
                             f"{b['architecture']} threads={b['num_threads']} "
                             f"({b['library']})")
    load = m.get("loadavg_start"), m.get("loadavg_end")
    if load[0] is not None:
        lines.append(f"load     1-min load average {load[0]:.2f} at start, "
                     f"{load[1]:.2f} at end, on {m['usable_cpus']} CPUs")
    lines.append(
        f"SGEMM    {peak['n']}^3 float32: numpy {peak['numpy_gflops']:.1f} GFLOP/s, "
        f"scipy {peak['scipy_gflops']:.1f} GFLOP/s -> peak {peak['gflops']:.1f} GFLOP/s "
        f"(best of start and end of run)")
    return lines


def write_atomic(path, text):
    """Write text to path via a temporary file in the same directory and os.replace."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)  # mkstemp creates 0600; give the file the usual permissions
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- main -----------------------------------------------------------------------------
def import_layers(self_test):
    try:
        import grucy
        from grucy.reference import GRU as BaseGRU
    except ImportError as exc:
        sys.exit(f"bench_gru: cannot import grucy / grucy.reference ({exc}); install the "
                 f"package (pip install -e .) or run with PYTHONPATH=src")
    if self_test:
        return grucy, BaseGRU, BaseGRU
    try:
        FastGRU = grucy.GRU
    except AttributeError:
        sys.exit("bench_gru: grucy.GRU is missing: the compiled extension is probably not "
                 "built; run `pip install -e . --no-build-isolation` first")
    return grucy, FastGRU, BaseGRU


def main(argv=None):
    args = build_parser().parse_args(argv)
    shapes = args.shapes or DEFAULT_SHAPES
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        sys.exit(f"bench_gru: --modes must be a subset of {','.join(MODES)}, got {args.modes!r}")
    target = args.target_seconds or (0.3 if args.quick else 1.5)
    min_repeats = args.min_repeats or (3 if args.quick else 5)
    sgemm_n, sgemm_repeats = 2048, (3 if args.quick else 5)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    grucy, FastGRU, BaseGRU = import_layers(args.self_test)

    limiter = None
    if args.threads is not None:
        if hasattr(grucy, "set_num_threads"):
            grucy.set_num_threads(args.threads)
        try:
            from threadpoolctl import threadpool_limits
            # Limits every BLAS (numpy's and scipy's OpenBLAS) and OpenMP runtime loaded so
            # far, so the baseline gets the same number of threads as grucy.
            limiter = threadpool_limits(limits=args.threads)
        except ImportError:
            log("bench_gru: threadpoolctl is not installed; --threads only sets grucy's "
                "threads, BLAS keeps its own (set OPENBLAS_NUM_THREADS before starting)")

    t_start = time.perf_counter()
    try:
        log(f"bench_gru: SGEMM {sgemm_n}^3 ...")
        load_start = loadavg()
        sg_start = sgemm_peak(sgemm_n, sgemm_repeats)
        machine = machine_info(grucy, args.threads)
        machine["loadavg_start"] = load_start
        if load_start is not None and load_start > 0.5 * (machine["usable_cpus"] or 1):
            log(f"bench_gru: note: load average {load_start:.2f} before starting; other "
                f"processes compete for the CPUs")
        rows = []
        for k, shape in enumerate(shapes, 1):
            log(f"bench_gru: [{k}/{len(shapes)}] B,T,I,H = {shape}")
            rows += run_case(FastGRU, BaseGRU, shape, modes, target, min_repeats,
                             args.seed, max(sg_start.values()), log)
        sg_end = sgemm_peak(sgemm_n, sgemm_repeats)
        machine["loadavg_end"] = loadavg()
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    elapsed = time.perf_counter() - t_start

    # The peak is the best SGEMM seen in the run; percentages use it, so rescale if the
    # end-of-run measurement beat the one used while running.
    sg = {k: max(sg_start[k], sg_end[k]) for k in sg_start}
    peak = {"n": sgemm_n, "numpy_gflops": sg["numpy"], "scipy_gflops": sg["scipy"],
            "gflops": max(sg.values()), "start": sg_start, "end": sg_end}
    for r in rows:
        r["grucy_pct_sgemm"] = 100.0 * r["grucy_gflops"] / peak["gflops"]
    summary = summarize(rows)

    title = "grucy.GRU vs NumPy baseline grucy.reference.GRU"
    if args.self_test:
        title = "SELF-TEST: grucy.reference.GRU timed against itself"
    print(title + f" (float32, time-major, 1 layer, unidirectional"
          f"{', --quick' if args.quick else ''})")
    print("\n".join(machine_lines(machine, peak)))
    print()
    print(text_table(rows))
    print()
    print("\n".join(summary_lines(summary)))
    print(f"speedup (med) = numpy median / grucy median, speedup (min) = numpy min / "
          f"grucy min; GFLOP/s from grucy's min time; total {elapsed:.0f} s")
    if busy_warning(machine):
        print(busy_warning(machine))

    if args.markdown:
        md = [f"{title}, float32, time-major, 1 layer, unidirectional.", "",
              f"Machine: {machine['cpu']}, {machine['usable_cpus']} CPUs; numpy "
              f"{machine['numpy']}, scipy {machine['scipy']}; grucy OpenMP "
              f"{machine['grucy_openmp']}, {machine['grucy_threads']} threads; SGEMM peak "
              f"{peak['gflops']:.1f} GFLOP/s.", "",
              markdown_table(rows), ""]
        md += [line + "  " for line in summary_lines(summary)]
        if busy_warning(machine):
            md += ["", busy_warning(machine)]
        write_atomic(args.markdown, "\n".join(md) + "\n")
        log(f"bench_gru: wrote {args.markdown}")

    if args.json not in ("", "-"):
        doc = {
            "benchmark": "bench_gru",
            "self_test": args.self_test,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "options": {"quick": args.quick, "threads": args.threads, "modes": modes,
                        "target_seconds": target, "min_repeats": min_repeats,
                        "seed": args.seed, "argv": sys.argv[1:] if argv is None else argv},
            "machine": machine,
            "sgemm": peak,
            "flops_formula": "train = 18*T*B*H*(I+H); infer = train/3",
            "results": rows,
            "summary": summary,
            "elapsed_seconds": elapsed,
        }
        write_atomic(args.json, json.dumps(doc, indent=1) + "\n")
        log(f"bench_gru: wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
