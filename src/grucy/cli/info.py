"""``grucy info``: versions, threads, kernels and BLAS of this installation."""

from __future__ import annotations

import json
import os
import platform

from .._version import __version__

__all__ = ["add", "collect_info", "OPTIONAL"]


OPTIONAL = ("scikit-learn", "pandas", "tqdm", "matplotlib", "threadpoolctl", "mpi4py",
            "torch", "onnx", "onnxruntime", "keras")


def collect_info():
    """Versions, threads, kernels and BLAS as a JSON-able dict."""
    from importlib import metadata

    import numpy as np
    import scipy

    from .._gru import get_num_threads

    info = {
        "grucy": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "threads": int(get_num_threads()),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "GRUCY_ISA", "GRUCY_SPIN_US",
                                           "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                                           "OPENBLAS_L2_SIZE")
                if k in os.environ},
        "optional": {},
    }
    for name in OPTIONAL:
        try:
            info["optional"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["optional"][name] = None
    info["blas"] = _blas_info()
    info["kernels"] = _kernel_info()
    return info


def _kernel_info():
    """Which of grucy's kernels run on this CPU (``grucy._gru.kernel_info``)."""
    from .. import _gru

    return dict(_gru.kernel_info())


_PACKED_NAMES = {"avx512": "grucy's GEMM, AVX-512", "avx2": "grucy's GEMM, AVX2",
                 "portable": "grucy's GEMM, portable C",
                 "blas": "scipy's BLAS (GRUCY_ISA=blas)"}
# "baseline": the build's own target, without clones (they exist on x86-64 only)
_BASELINE = {"x86_64": "baseline x86-64 (SSE2)", "AMD64": "baseline x86-64 (SSE2)",
             "aarch64": "baseline ARM64 (NEON)", "arm64": "baseline ARM64 (NEON)"}
_ROWS_NAMES = {"avx512": "AVX-512", "avx2": "AVX2",
               "baseline": _BASELINE.get(platform.machine(), f"baseline {platform.machine()}")}


def _blas_info():
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS, which grucy calls)

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        return [{"library": p.get("internal_api"), "version": p.get("version"),
                 "threads": p.get("num_threads"), "architecture": p.get("architecture"),
                 "user_api": p.get("user_api"), "path": p.get("filepath")}
                for p in threadpool_info()]
    try:
        import numpy as np

        deps = np.show_config(mode="dicts")["Build Dependencies"]
        blas = deps.get("blas", {})
        return [{"library": blas.get("name"), "version": blas.get("version"),
                 "threads": None, "source": "numpy build configuration"}]
    except Exception:  # pragma: no cover - very old or unusual numpy builds
        return []


def _run_info(args):
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"grucy {info['grucy']}  (Python {info['python']}, {info['platform']})")
    print(f"numpy {info['numpy']}, scipy {info['scipy']}")
    print(f"threads: {info['threads']} (grucy's own thread team; cpus: {info['cpus']})")
    for k, v in info["env"].items():
        print(f"  {k}={v}")
    k = info["kernels"]
    print("kernels on this CPU:")
    print(f"  products with the weights: {_PACKED_NAMES.get(k['packed'], k['packed'])}")
    print(f"  fused per-row passes:      {_ROWS_NAMES.get(k['rows'], k['rows'])}")
    print(f"  OpenBLAS core:             {k['blas_core'] or 'none (another BLAS)'}")
    held = (f"one thread ({k['blas_threads']})" if k["blas_threads"] != "none"
            else "not limited (scipy's BLAS offers no thread control)")
    print(f"  BLAS inside the kernels:   {held}")
    if "bf16" in k:
        print(f"  bf16 / int8 products:      {k['bf16']} / {k['int8']}")
    print("BLAS / thread pools:")
    for b in info["blas"]:
        extra = ", ".join(f"{k} {b[k]}" for k in ("version", "threads", "architecture")
                          if b.get(k) is not None)
        where = os.path.basename(b["path"]) if b.get("path") else b.get("source", "")
        print(f"  {b.get('library')} ({extra})  {where}")
    print("optional packages:")
    for name, version in info["optional"].items():
        print(f"  {name:<13} {version or 'not installed'}")
    return 0


def add(subparsers):
    p = subparsers.add_parser(
        "info", help="versions, threads, kernels and BLAS of this installation",
        description="Print grucy's version, Python, numpy and scipy versions, how many "
                    "threads the kernels use, which kernels run on this CPU (grucy's "
                    "GEMM for AVX-512, AVX2 or portable C, or BLAS, for the products "
                    "with the weights, the instruction set of the "
                    "fused per-row passes, OpenBLAS's own name of its kernel), "
                    "the BLAS libraries and their thread pools (through threadpoolctl "
                    "when installed, else numpy's build configuration), and which "
                    "optional packages are installed.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_run_info)
