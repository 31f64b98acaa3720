"""The machine under the benchmark: what it is, its float32 ceilings, its thread settings,
and a competing load for the busy-machine mode.

* :func:`machine_info`: CPU, versions, BLAS libraries (threadpoolctl), grucy's kernels
  (``grucy._gru.kernel_info``) and the OpenBLAS variables that change OpenBLAS's kernel;
* :func:`measure_peaks`: the SGEMM peak (numpy and scipy's BLAS) and the FMA peak
  (``grucy._gru.fma_peak``: independent vector FMA chains) at the current thread count;
* :class:`ThreadSetting`: one thread count for grucy, BLAS and OpenMP (threadpoolctl) and
  torch, restored afterwards;
* :class:`BusyLoad`: processes spinning on the CPU while the benchmark measures, always
  stopped when the block ends (also on Ctrl-C and errors).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import numpy as np

__all__ = ["cpu_model", "cpu_flags", "usable_cores", "loadavg", "busy_warning",
           "machine_info", "gemm_peak", "measure_peaks", "limit_threads", "ThreadSetting",
           "BusyLoad"]


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
                    return [x for x in ("avx2", "fma", "avx512f", "amx_tile") if x in flags]
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
    """A warning line when other work competed for the CPUs during the quiet part of the
    run (the busy mode's own load is not counted), else ''."""
    end = m.get("loadavg_quiet_end", m.get("loadavg_end"))
    loads = [x for x in (m.get("loadavg_start"), end) if x is not None]
    cpus = m["usable_cpus"] or 1
    # This process itself contributes up to `cpus` to the end-of-run figure.
    if loads and max(loads) > cpus + 0.75:
        return (f"WARNING: load average up to {max(loads):.1f} on {cpus} CPUs: other "
                f"processes competed for the cores; timings (medians above all) are "
                f"unreliable, and OpenMP/BLAS threads that wait for each other suffer "
                f"most. Rerun on a quiet machine.")
    return ""


def blas_info():
    """Every BLAS and OpenMP library loaded so far (threadpoolctl), or None without it."""
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
    from grucy import _gru
    from grucy.bench import blas_env_warnings

    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "grucy": grucy.__version__,
        "threads": threads,
        "kernels": _gru.kernel_info(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "openblas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                    "OPENBLAS_NUM_THREADS")
                         if k in os.environ},
        "warnings": blas_env_warnings(),
        "blas": blas_info(),
    }


# -- peaks ------------------------------------------------------------------------------
def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


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
        result[name] = flops / min(_timed(fn) for _ in range(repeats)) / 1e9
    return result


def measure_peaks(threads, gemm_size, repeats, dtypes=("float32",), fma_seconds=0.3):
    """The machine's ceilings at ``threads`` threads (BLAS already limited to them):
    ``{"fma_gflops": float32 FMA peak, "gemm": {dtype: {"numpy": .., "scipy": ..}}}``."""
    from grucy import _gru

    return {"threads": threads,
            "fma_gflops": _gru.fma_peak(threads, fma_seconds),
            "gemm": {dt: gemm_peak(gemm_size, repeats, dt) for dt in dtypes}}


# -- threads --------------------------------------------------------------------------
def limit_threads(threads, grucy, log):
    """With ``threads`` (not None): grucy's thread count and, through threadpoolctl,
    every BLAS and OpenMP runtime loaded so far, so all implementations get the same
    number.  Returns the threadpoolctl limiter to restore afterwards, or None (the
    profiler's form of :class:`ThreadSetting`)."""
    if threads is None:
        return None
    grucy.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log("bench_gru: threadpoolctl is not installed; --threads sets grucy's, "
            "torch's and ONNX Runtime's threads, BLAS keeps its own (set "
            "OPENBLAS_NUM_THREADS before starting)")
        return None
    return threadpool_limits(limits=threads)


class ThreadSetting:
    """``with ThreadSetting(n, grucy, log):`` n threads for grucy (``set_num_threads``),
    every BLAS and OpenMP runtime loaded (threadpoolctl, when installed) and torch (when
    imported; its peers also set it when built); the previous counts come back after."""

    warned = False

    def __init__(self, n, grucy, log=None):
        self.n, self.grucy, self.log = n, grucy, log
        self.limiter = None

    def __enter__(self):
        self.old_grucy = self.grucy.get_num_threads()
        torch = sys.modules.get("torch")
        self.old_torch = torch.get_num_threads() if torch is not None else None
        self.grucy.set_num_threads(self.n)
        if torch is not None:
            torch.set_num_threads(self.n)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            if self.log is not None and not ThreadSetting.warned:
                ThreadSetting.warned = True
                self.log("bench_gru: threadpoolctl is not installed; BLAS keeps its own "
                         "thread count (set OPENBLAS_NUM_THREADS before starting)")
        else:
            self.limiter = threadpool_limits(limits=self.n)
        return self

    def __exit__(self, *exc):
        if self.limiter is not None:
            self.limiter.restore_original_limits()
        self.grucy.set_num_threads(self.old_grucy)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(self.old_torch or self.old_grucy)
        return False


# -- a competing load -----------------------------------------------------------------
# One spinning thread per process (a Python process keeps one core busy: the GIL).  The
# loop checks every few milliseconds that its parent is alive, so even a benchmark killed
# with SIGKILL leaves no spinner behind for long.
_SPIN = """\
import os, sys
parent = os.getppid()
sys.stdout.write("ready\\n")
sys.stdout.flush()
while os.getppid() == parent:
    for _ in range(100000):
        pass
"""


class BusyLoad:
    """``with BusyLoad(n):`` n processes, each one thread spinning on the CPU (a pure
    integer loop in the interpreter, no memory traffic), from the moment they report
    ready until the block ends, however it ends (exception, KeyboardInterrupt)."""

    def __init__(self, threads):
        self.threads = int(threads)
        self.procs = []

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def __enter__(self):
        try:
            for _ in range(self.threads):
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-S", "-c", _SPIN], stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
            for p in self.procs:
                if p.stdout.readline().strip() != b"ready":
                    raise RuntimeError(f"busy-load process {p.pid} did not start "
                                       f"(exit status {p.poll()})")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
