#!/usr/bin/env python
"""Benchmark grucy.GRU against its peers, in one process, on the same weights and data.

Peers (each optional, reported as missing when not installed, never faked): PyTorch
``nn.GRU`` (training step and inference), ONNX Runtime's ``GRU`` operator (inference),
the NumPy baseline ``grucy.reference.GRU``, Keras on TensorFlow, and (opt-in) Keras on the
torch backend.  Every peer's outputs (and gradients, for training) are checked against
grucy's on the same weights before it is timed; a peer that disagrees is not timed.

Cases (``--cases``):

* ``core``: five shapes (B, T, I, H), float32, 1 layer, 1 direction;
* ``bidir``: a 2-layer bidirectional GRU; ``float64``: the same shape in float64;
* ``varlen``: a batch whose mean length is T/2 against the same batch at full length;
* ``sweep``: grucy, PyTorch and ONNX Runtime at every count of ``--threads 1,2,4,...``
  (default 1 and the run's count), parallel efficiency, "more threads never hurt";
* ``streaming``: per-call cost of one step at B=1;
* ``memory``: peak memory of one training step, each in a fresh subprocess.

``--busy N`` also times every implementation on the core shapes while N spinning
threads of other processes compete for the cores.  The machine's float32 FMA peak and
SGEMM peak are measured in the same run, at the same thread count, and every GFLOP/s
figure is given as a fraction of both.

Timing: each case is warmed up, then the implementations run in turn, repeated until
about ``--target-seconds`` are spent (at least ``--min-repeats`` times).  Ratios are
taken from the minimum times (the least disturbed runs on a shared machine).

    python bench/bench_gru.py [options]   # from a checkout: PYTHONPATH=src after
                                          # python setup.py build_ext --inplace

Run it under ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``.  ``--help`` lists the
options; bench/README.md explains the output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # the helper modules beside this file, when imported from elsewhere
    sys.path.insert(0, HERE)

from _bench_machine import cpu_model, loadavg, usable_cores  # noqa: E402,F401 (bench_mpi)
from _bench_args import (nonnegative_int, output_path, parse_shapes,  # noqa: E402
                         positive_float, positive_int, shape, subset, thread_counts)
from _bench_peers import DEFAULT_SHAPES, ISAS  # noqa: E402

__all__ = ["main", "build_parser", "DEFAULT_SHAPES", "SWEEP_SHAPES"]

# The thread sweep's shapes: the small and two large shapes of the many-core issue.
SWEEP_SHAPES = [(1, 100, 32, 64), (64, 50, 256, 512), (256, 50, 256, 512)]
EXTRA_SHAPE = (32, 100, 128, 256)   # bidir, float64 and varlen cases
STREAM_SIZE = (64, 128)             # (I, H) of the streaming case, B = 1
MODES = ("train", "infer")
PRECISIONS = ("fp32", "bf16", "int8")
CASES = ("core", "bidir", "float64", "varlen", "sweep", "streaming", "memory")
PEER_NAMES = ("torch", "onnxruntime", "numpy", "keras-tf", "keras-torch")
DEFAULT_PEERS = ("torch", "onnxruntime", "numpy", "keras-tf")


# -- options --------------------------------------------------------------------------
# The argparse types (shapes, counts, subsets, output paths) are shared with the other
# bench/ scripts: _bench_args.py.


def build_parser(prog=None):
    shape_list = ", ".join(f"{i}: {'x'.join(map(str, s))}"
                           for i, s in enumerate(DEFAULT_SHAPES, 1))
    sweep = ",".join("x".join(map(str, s)) for s in SWEEP_SHAPES)
    p = argparse.ArgumentParser(
        prog=prog,
        description="Time grucy.GRU against PyTorch, ONNX Runtime, the NumPy baseline and "
                    "Keras on the same weights and data, check every peer's results "
                    "against grucy's, and report speedups, GFLOP/s against the machine's "
                    "FMA and SGEMM peaks of the same run, a thread sweep, a busy-machine "
                    "run, streaming overhead, peak memory and the performance targets.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Default shapes (BxTxIxH) {shape_list}.  Run under 'env -u "
               f"OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE'.  See bench/README.md.")
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats, less time per case, the two smaller sweep shapes "
                        "(smoke run)")
    p.add_argument("--shapes", type=parse_shapes, default=None, metavar="LIST",
                   help="core shapes: comma-separated 1-based indices into the default "
                        "shapes and/or explicit BxTxIxH, e.g. '1,2' or '8x200x40x96'")
    p.add_argument("--modes", type=subset(MODES, "--modes"), default=list(MODES),
                   metavar="LIST", help="subset of 'train,infer' (default: both)")
    p.add_argument("--peers", type=subset(PEER_NAMES, "--peers"),
                   default=list(DEFAULT_PEERS), metavar="LIST",
                   help=f"peers to run, subset of {','.join(PEER_NAMES)} or 'all' "
                        f"(default: {','.join(DEFAULT_PEERS)}; keras-torch is opt-in, "
                        f"it is slow, and only one Keras backend can run per process)")
    p.add_argument("--isa", type=subset(ISAS, "--isa"), default=[], metavar="LIST",
                   help=f"also time grucy on its other GEMM kernels, subset of "
                        f"{','.join(ISAS)} (each a column like a peer: grucy-avx2, ...; "
                        f"for CPUs without AVX-512 run it with ATEN_CPU_CAPABILITY=avx2 "
                        f"so PyTorch is restricted alike)")
    p.add_argument("--precisions", type=subset(PRECISIONS, "--precisions"),
                   default=list(PRECISIONS), metavar="LIST",
                   help="subset of 'fp32,bf16,int8' (default: all): bf16 adds grucy's "
                        "precision='bf16' (training and inference), int8 adds "
                        "grucy.quantize(gru, 'int8') and, when torch is a peer, PyTorch's "
                        "dynamic int8 GRU (inference), to the core, bidir and varlen cases, "
                        "in their own table (issue 18); grucy float32 always runs")
    p.add_argument("--cases", type=subset(CASES, "--cases"), default=list(CASES),
                   metavar="LIST", help=f"subset of {','.join(CASES)} (default: all)")
    p.add_argument("--threads", type=thread_counts, default=None, metavar="N|LIST",
                   help="thread counts, e.g. 8 or 1,2,4,8,16: the cases run at the largest "
                        "(grucy's set_num_threads, every BLAS and OpenMP runtime through "
                        "threadpoolctl, torch.set_num_threads, ONNX Runtime's "
                        "intra_op_num_threads), the sweep at every count (default: "
                        "grucy's current count; the sweep at 1 and that count)")
    p.add_argument("--sweep-shapes", type=parse_shapes, default=None, metavar="LIST",
                   help=f"shapes of the thread sweep (default: {sweep}; with --quick the "
                        f"first two)")
    p.add_argument("--busy", type=nonnegative_int,
                   default=0, metavar="N",
                   help="also time every implementation on the core shapes while N "
                        "spinning threads of other processes compete for the cores "
                        "(started and stopped by the benchmark; default 0: off)")
    p.add_argument("--extra-shape", type=shape, default=EXTRA_SHAPE, metavar="BxTxIxH",
                   help="shape of the bidir, float64 and varlen cases (default: "
                        f"{'x'.join(map(str, EXTRA_SHAPE))})")
    p.add_argument("--stream-size", type=lambda t: shape(t, 2, "IxH"), default=STREAM_SIZE,
                   metavar="IxH", help="input and hidden size of the streaming case "
                                       f"(default: {'x'.join(map(str, STREAM_SIZE))})")
    p.add_argument("--json", type=output_path(folder_ok=True), default=None, metavar="PATH",
                   help="also write the results as JSON to PATH (atomically; a folder or "
                        "a path ending in '/': bench_gru.json in it); default: print only")
    p.add_argument("--plot", type=output_path(), default=None, metavar="PATH",
                   help="PNG of the speedups on the core shapes (needs matplotlib)")
    p.add_argument("--markdown", type=output_path(literals=("-",)), nargs="?", const="-",
                   default=None, metavar="PATH",
                   help="print the README tables (Markdown) after the report, or write "
                        "them to PATH")
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
                   help="size of the N^3 GEMM that measures the SGEMM peak "
                        "(default: %(default)s)")
    p.add_argument("--profile", action="store_true",
                   help="instead of the benchmark, break grucy's training step into "
                        "recurrent GEMM, hoisted GEMMs, fused passes, Python overhead and "
                        "allocation on the --shapes (see bench/README.md)")
    # Internal: one memory measurement in a fresh process (see _bench_cases.memory_child).
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return p


def _json_path(path, name):
    if path and (path.endswith(("/", os.sep)) or os.path.isdir(path)):
        return os.path.join(path, name)
    return path


def _import_grucy():
    try:
        import grucy
        grucy.GRU  # noqa: B018 -- the compiled extension must be importable
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"bench_gru: cannot import grucy.GRU ({exc}); build the "
                         f"extension (pip install -e . --no-build-isolation, or python "
                         f"setup.py build_ext --inplace with PYTHONPATH=src)") from None
    return grucy


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


# -- main -------------------------------------------------------------------------------------
def main(argv=None, *, prog="python bench/bench_gru.py"):
    """Run the benchmark; ``argv`` defaults to ``sys.argv[1:]``.

    Returns the exit status: 0, or 1 when a peer's results disagreed with grucy's (that
    peer is then not timed).
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.memory_child:
        from _bench_cases import memory_child
        return memory_child(args.memory_child)
    grucy = _import_grucy()
    counts = args.threads or [grucy.get_num_threads()]
    threads = counts[-1]
    old = grucy.get_num_threads()
    try:
        grucy.set_num_threads(threads)
    except ValueError as exc:
        parser.error(f"argument --threads: {exc}")
    grucy.set_num_threads(old)
    cmd_args = sys.argv[1:] if argv is None else list(argv)
    command = " ".join([prog] + cmd_args)
    if args.profile:
        from _bench_profile import run_profile
        args.threads = threads if args.threads else None
        args.json = _json_path(args.json, "profile_gru.json")
        return run_profile(args, grucy, _log, command)
    args.json = _json_path(args.json, "bench_gru.json")
    args.peers = list(args.peers) + [f"grucy-{isa}" for isa in args.isa
                                     if f"grucy-{isa}" not in args.peers]
    doc = run(args, grucy, counts, command, cmd_args)
    from _bench_report import markdown_lines, plot_speedups, report_lines
    from _bench_timing import write_atomic

    print("\n".join(report_lines(doc)), flush=True)
    if args.markdown:
        md = "\n".join(markdown_lines(doc)) + "\n"
        if args.markdown == "-":
            print("\n" + md, end="")
        else:
            write_atomic(args.markdown, md)
            _log(f"bench_gru: wrote {args.markdown}")
    if args.json:
        write_atomic(args.json, json.dumps(doc, indent=1) + "\n")
        _log(f"bench_gru: wrote {args.json}")
    if args.plot:
        if plot_speedups(doc, args.plot):
            _log(f"bench_gru: wrote {args.plot}")
        else:
            _log("bench_gru: no plot (matplotlib is not installed)")
    return 1 if doc["failures"] else 0


def run(args, grucy, counts, command, argv):
    """Every case of the run; the JSON document."""
    from _bench_cases import Bench, run_memory, run_timed_groups
    from _bench_machine import ThreadSetting, machine_info, measure_peaks
    from _bench_report import evaluate_targets
    from _bench_stream import run_streaming
    from _bench_sweep import run_busy, run_sweep

    threads = counts[-1]
    shapes = args.shapes or DEFAULT_SHAPES
    sweep_shapes = args.sweep_shapes or (SWEEP_SHAPES[:2] if args.quick else SWEEP_SHAPES)
    sweep_counts = counts if len(counts) > 1 else [1, threads] if threads > 1 else []
    bench = Bench(args, grucy, _log, threads)
    repeats = 3 if args.quick else 5
    fma_seconds = 0.1 if args.quick else 0.3
    dtypes = ["float32"] + (["float64"] if "float64" in args.cases else [])
    t_start = time.perf_counter()
    with ThreadSetting(threads, grucy, _log):
        load_start = loadavg()
        _log(f"bench_gru: peaks at {threads} threads ...")
        start = measure_peaks(threads, args.gemm_size, repeats, dtypes, fma_seconds)
        machine = machine_info(grucy, threads)
        machine["loadavg_start"] = load_start
        if load_start is not None and load_start > 0.5 * (machine["usable_cpus"] or 1):
            _log(f"bench_gru: note: load average {load_start:.2f} before starting; other "
                 f"processes compete for the CPUs")
        for w in machine["warnings"]:
            _log(f"bench_gru: WARNING: {w}")
        _log("bench_gru: peers: " + "; ".join(f"{n}: {s['detail']}"
                                              for n, s in bench.peer_status.items()))
        rows, varlen = run_timed_groups(bench, shapes)
        if "sweep" not in args.cases:
            sweep = {}
        elif sweep_counts:
            sweep = run_sweep(bench, sweep_shapes, sweep_counts)
        else:
            sweep = {"skipped": "one thread only: give --threads a list, e.g. 1,2"}
        streaming = run_streaming(bench) if "streaming" in args.cases else {}
        memory = run_memory(bench, shapes) if "memory" in args.cases else {}
        machine["loadavg_quiet_end"] = loadavg()
        busy = run_busy(bench, shapes, rows, args.busy) if args.busy else {}
        end = measure_peaks(threads, args.gemm_size, repeats, dtypes, fma_seconds)
        machine["loadavg_end"] = loadavg()
    # The peaks are the best of the start and the end of the run, and of the sweep's
    # measurement at the same thread count.
    runs = [start, end] + [p for p in sweep.get("peaks", {}).values()
                           if p["threads"] == threads]
    peaks = {"threads": threads, "fma_gflops": max(p["fma_gflops"] for p in runs),
             "fma_start": start["fma_gflops"], "fma_end": end["fma_gflops"],
             "fma_sweep": runs[2]["fma_gflops"] if len(runs) > 2 else None, "gemm": {}}
    for dt in dtypes:
        best = {k: max(p["gemm"][dt][k] for p in runs if dt in p["gemm"])
                for k in start["gemm"][dt]}
        peaks["gemm"][dt] = {"n": args.gemm_size, "numpy_gflops": best["numpy"],
                             "scipy_gflops": best["scipy"], "gflops": max(best.values()),
                             "start": start["gemm"][dt], "end": end["gemm"][dt],
                             "sweep": runs[2]["gemm"][dt] if len(runs) > 2
                             and dt in runs[2]["gemm"] else None}
    for r in rows:
        for d in r["impls"].values():
            if "gflops" in d:
                d["pct_sgemm"] = 100.0 * d["gflops"] / peaks["gemm"][r["dtype"]]["gflops"]
                if r["dtype"] == "float32":
                    d["pct_fma"] = 100.0 * d["gflops"] / peaks["fma_gflops"]
    doc = {
        "benchmark": "grucy", "format": 3,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "options": {"quick": args.quick, "threads": counts, "modes": args.modes,
                    "peers": args.peers, "precisions": args.precisions,
                    "cases": args.cases, "busy": args.busy,
                    "shapes": ["x".join(map(str, s)) for s in shapes],
                    "sweep_shapes": ["x".join(map(str, s)) for s in sweep_shapes],
                    "extra_shape": "x".join(map(str, args.extra_shape)),
                    "target_seconds": bench.target, "min_repeats": bench.min_repeats,
                    "order": args.order, "seed": args.seed, "argv": argv},
        "machine": machine, "peaks": peaks,
        "peers": dict(bench.peer_status),
        "flops_formula": "train = 18*rows*H*(I_k+H) per layer and direction, rows = T*B "
                         "or sum(lengths); infer = train/3",
        "results": rows, "varlen": varlen, "sweep": sweep, "busy": busy,
        "streaming": streaming, "memory": memory, "failures": bench.failures,
        "elapsed_seconds": time.perf_counter() - t_start,
    }
    doc["targets"] = evaluate_targets(doc)
    return doc


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the busy mode's processes are already stopped
        print("bench_gru: interrupted", file=sys.stderr)
        sys.exit(130)
