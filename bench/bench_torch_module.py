"""grucy.torch.GRU against torch.nn.GRU: one training step (forward + backward), same process.

Both modules get the same weights and the same data; each repeat runs every module once,
in alternating order, so that slow phases of a shared machine hit both alike.  Prints the
minimum and median time per step of each module and the ratio torch / grucy (> 1 means
grucy is faster).

    python bench/bench_torch_module.py                # B=32 T=100 I=128 H=256
    python bench/bench_torch_module.py --shape 16x50x64x128 --repeats 30
    python bench/bench_torch_module.py --mode infer
    python bench/bench_torch_module.py --import-order grucy-first

(After ``pip install .``; with an in-place build, ``export PYTHONPATH=src`` first.)  grucy
runs its own thread team, torch its OpenMP runtime; ``--import-order`` checks that which
is imported first makes no difference.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import sys
import time

from _bench_args import nonnegative_int, positive_int, shape


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None):
    omp_env = {k: os.environ.get(k, "(unset)") for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=shape, default=(32, 100, 128, 256),
                    help="BxTxIxH (default 32x100x128x256)")
    ap.add_argument("--layers", type=positive_int, default=1)
    ap.add_argument("--bidirectional", action="store_true")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--mode", choices=["train", "infer"], default="train")
    ap.add_argument("--repeats", type=positive_int, default=20)
    ap.add_argument("--warmup", type=nonnegative_int, default=3)
    ap.add_argument("--threads", type=positive_int, default=2,
                    help="torch.set_num_threads and grucy.set_num_threads (default 2)")
    ap.add_argument("--grucy-threads", type=positive_int, default=None,
                    help="threads of grucy's kernels (grucy.set_num_threads and "
                         "grucy.torch.GRU.grucy_threads); default: --threads")
    ap.add_argument("--import-order", choices=["torch-first", "grucy-first"],
                    default="torch-first",
                    help="which library the process imports first (default torch-first, as "
                         "most scripts do)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    # Imported here, in the order asked for.
    first, second = (("torch", "grucy") if args.import_order == "torch-first"
                     else ("grucy", "torch"))
    mods = {name: importlib.import_module(name) for name in (first, second)}
    grucy, torch = mods["grucy"], mods["torch"]
    import numpy as np
    from grucy.torch import GRU

    B, T, I, H = args.shape
    torch.set_num_threads(args.threads)
    grucy.set_num_threads(args.threads if args.grucy_threads is None else args.grucy_threads)
    if args.grucy_threads is not None:
        GRU.grucy_threads = args.grucy_threads
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    ref = torch.nn.GRU(I, H, args.layers, bidirectional=args.bidirectional, dtype=dtype)
    ours = GRU(I, H, args.layers, bidirectional=args.bidirectional, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=args.mode == "train")
    dy = torch.randn(T, B, (2 if args.bidirectional else 1) * H, dtype=dtype)

    def step(module):
        if args.mode == "train":
            module.zero_grad(set_to_none=True)
            x.grad = None
            y, _ = module(x)
            y.backward(dy)
        else:
            with torch.no_grad():
                module(x)

    # Same numbers first: a benchmark of a wrong result is worthless.
    with torch.no_grad():
        diff = (ours(x)[0] - ref(x)[0]).abs().max().item()
    if diff > (1e-4 if dtype == torch.float32 else 1e-10):
        sys.exit(f"outputs differ by {diff:.3g}: not benchmarking")

    modules = {"torch.nn.GRU": ref, "grucy.torch.GRU": ours}
    times = {name: [] for name in modules}
    for _ in range(args.warmup):
        for m in modules.values():
            step(m)
    for rep in range(args.repeats):
        order = list(modules.items())
        if rep % 2:
            order.reverse()
        for name, m in order:
            t0 = time.perf_counter()
            step(m)
            times[name].append(time.perf_counter() - t0)

    flop = (18 if args.mode == "train" else 6) * T * B * H * (I + H)  # layer 0 only
    print(f"machine: {_cpu_name()}, {os.cpu_count()} logical CPUs, {platform.platform()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"numpy {np.__version__}, grucy {grucy.__version__} "
          f"(GEMM kernel {grucy._gru.kernel_isa()})")
    module_threads = grucy.get_num_threads() if GRU.grucy_threads is None else GRU.grucy_threads
    print(f"threads: torch {torch.get_num_threads()}, grucy.torch.GRU {module_threads}; "
          f"imported {first} first; at start {omp_env}")
    print(f"case: {args.mode}, B={B} T={T} I={I} H={H}, layers={args.layers}, "
          f"bidirectional={args.bidirectional}, {args.dtype}; {args.repeats} interleaved "
          f"repeats after {args.warmup} warm-up; max |y diff| = {diff:.2g}")
    print(f"{'module':<18}{'min ms':>10}{'median ms':>12}{'GFLOP/s (min)':>16}")
    for name, ts in times.items():
        print(f"{name:<18}{1e3 * min(ts):>10.2f}{1e3 * statistics.median(ts):>12.2f}"
              f"{flop / min(ts) / 1e9:>16.1f}")
    t_ref, t_ours = times["torch.nn.GRU"], times["grucy.torch.GRU"]
    print(f"speed-up of grucy.torch.GRU over torch.nn.GRU: "
          f"{min(t_ref) / min(t_ours):.2f}x (min), "
          f"{statistics.median(t_ref) / statistics.median(t_ours):.2f}x (median)")


if __name__ == "__main__":
    main()
