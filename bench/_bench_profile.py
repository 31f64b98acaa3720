"""Where a training step of grucy.GRU spends its time (``bench_gru.py --profile``).

The kernels time themselves: ``grucy._gru.profile(True)`` turns on per-thread phase
timers inside ``_gru.forward``/``backward`` (two clock reads per phase and step), and
``profile_report()`` returns them, summed over threads and per thread.  The plan each
call runs (threads, row groups x unit chunks) comes from ``_gru.work_plan``.  Nothing
here re-enacts the kernels, so a kernel change needs no change here.

Per shape: the step through the layer (``GRU.forward`` + ``GRU.backward``, min of
repeats), then steps with the timers on, giving per phase the milliseconds per step
(summed over threads and divided by the threads of the call: the average thread's time),
the GEMM rate per thread against this core's FMA peak, the barrier waits, the thread
imbalance (busiest thread against the average) and what lies outside the kernels (the
layer's Python and allocations).

With ``perf`` usable (``perf record -e cpu-clock`` on this process), a sampling profile
of training steps is added, grouped by library and symbol.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import numpy as np

from _bench_machine import busy_warning, limit_threads, loadavg, machine_info
from _bench_peers import DEFAULT_SHAPES
from _bench_report import text_table
from _bench_timing import write_atomic

__all__ = ["run_profile", "profile_shape"]

# Multiply-adds of each GEMM phase of one training step (forward + backward), one layer
# and direction: the projection and dX both 3H*I per row, the recurrent products 3H*H
# per row each way, the weight gradients 3H*(I + H) per row.
GEMM_PHASES = {"projection_dx": lambda N, I, H: 2 * N * 3 * H * I,
               "recurrent_gemm": lambda N, I, H: 2 * N * 3 * H * H,
               "weight_grads": lambda N, I, H: N * 3 * H * (I + H)}
PHASE_TITLES = {
    "pack": "weight packing (W_hh blocks, W_ih), forward + backward",
    "projection_dx": "input projection X W_ih^T + dX = dG W_ih",
    "recurrent_gemm": "recurrent GEMMs, forward + backward",
    "fused": "fused passes (gates, state update, gate gradients)",
    "wait": "barrier waits",
    "weight_grads": "weight and bias gradients",
}


def _min_step_ms(step, seconds, min_repeats):
    step()
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < min_repeats:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def profile_shape(shape, grucy, seconds, min_repeats, seed, log):
    """One shape: the step's time and the kernels' own breakdown (a dict)."""
    from grucy import _gru

    B, T, I, H = shape
    rng = np.random.default_rng(seed)
    layer = grucy.GRU(I, H, seed=seed)
    x = rng.standard_normal((T, B, I), dtype=np.float32)
    dy = rng.standard_normal((T, B, H), dtype=np.float32)

    def step():
        layer.forward(x)
        layer.backward(dy)

    step_ms = _min_step_ms(step, seconds, min_repeats)
    steps = max(min_repeats, int(seconds * 1e3 / max(step_ms, 1e-3)) // 2 or 1)
    _gru.profile(True)
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - t0
    finally:
        _gru.profile(False)
    rep = _gru.profile_report()
    plan = _gru.work_plan(T, B, I, H)
    nt = plan["threads"]
    per_step = {k: 1e3 * v / steps / nt for k, v in rep["phases"].items()}
    kernel_ms = 1e3 * rep["wall"] / steps
    busy = [sum(row) for row in rep["threads"]] or [0.0]
    fma = _gru.fma_peak(1, 0.1)
    row = {"label": "x".join(map(str, shape)), "B": B, "T": T, "I": I, "H": H,
           "gflop": 18 * T * B * H * (I + H) / 1e9, "plan": plan,
           "step_ms": step_ms, "profiled_step_ms": 1e3 * wall / steps,
           "kernel_ms": kernel_ms, "fma_gflops_one_core": fma,
           "imbalance": max(busy) / (sum(busy) / len(busy)) if sum(busy) else None,
           "phases": {}}
    N = T * B
    for name, ms in per_step.items():
        entry = {"ms": ms, "pct_kernel": 100 * ms / kernel_ms if kernel_ms else None}
        if name in GEMM_PHASES and ms > 0:
            # per thread: the phase's multiply-adds over the time summed over threads
            gflops = 2 * GEMM_PHASES[name](N, I, H) / (ms * nt * 1e-3) / 1e9
            entry.update(gflops_per_thread=gflops, pct_fma=100 * gflops / fma)
        row["phases"][name] = entry
    row["phases"]["outside the kernels (layer.py, allocation)"] = {
        "ms": row["profiled_step_ms"] - kernel_ms,
        "pct_kernel": None}
    row["step_pct_fma"] = 100 * row["gflop"] / (step_ms * 1e-3) / (fma * nt)
    log(f"  profile {row['label']}: {step_ms:.3f} ms per step, kernels {kernel_ms:.3f} ms, "
        f"plan {plan['groups']}x{plan['chunks']} on {nt} threads")
    return row


# -- sampling profile -----------------------------------------------------------------
CATEGORIES = [  # (label, dso regex, symbol regex or None): first match wins
    ("grucy GEMM kernels (grucy_pgemm_*)", r"^_gru\.", r"^grucy_pgemm"),
    ("grucy fused passes (grucy_fwd_*/grucy_bwd_*)", r"^_gru\.", r"^grucy_(fwd|bwd)_"),
    ("grucy waits (spin, yield, futex)", r"^_gru\.", r"^grucy_(word|barrier|pool)"),
    ("grucy other code (packing, copies, Cython)", r"^_gru\.", None),
    ("BLAS", r"openblas", None),
    ("OS kernel (page faults, scheduling, syscalls)", r"kernel|\[k", None),
    ("libc (memcpy, memset, malloc)", r"^libc[.-]|^libm[.-]", None),
    ("Python interpreter", r"python|libpython", None),
    ("numpy", r"_multiarray|numpy", None),
]


def perf_available():
    """True when ``perf record -e cpu-clock`` works here (hardware counters need not)."""
    perf = shutil.which("perf")
    if perf is None:
        return False, "perf is not installed"
    with tempfile.TemporaryDirectory() as d:
        try:
            proc = subprocess.run([perf, "record", "-q", "-e", "cpu-clock", "-o",
                                   os.path.join(d, "p.data"), "--", "true"],
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"perf record failed: {exc}"
    if proc.returncode != 0:
        return False, f"perf record failed: {proc.stderr.strip()[-200:]}"
    return True, perf


def perf_profile(perf, step, seconds, log):
    """Sample this process (all threads) while ``step`` runs for ``seconds``; returns the
    share of samples per category and the top symbols."""
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "perf.data")
        proc = subprocess.Popen([perf, "record", "-q", "-e", "cpu-clock", "-F", "1999",
                                 "-p", str(os.getpid()), "-o", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # let perf attach; sleeping produces no cpu-clock samples
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            step()
            steps += 1
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            return {"error": "perf did not stop"}
        rep = subprocess.run([perf, "report", "-i", data, "--stdio", "--no-children",
                              "--sort", "dso,sym", "--percent-limit", "0"],
                             capture_output=True, text=True, timeout=300)
    line_re = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.+?)\s*$")
    cats = {label: 0.0 for label, _, _ in CATEGORIES}
    cats["other"] = 0.0
    symbols = []
    for line in rep.stdout.splitlines():
        m = line_re.match(line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
        if kind == "k":
            dso = "[kernel]"
        symbols.append((pct, dso, sym))
        for label, dso_re, sym_re in CATEGORIES:
            if re.search(dso_re, dso) and (sym_re is None or re.search(sym_re, sym)):
                cats[label] += pct
                break
        else:
            cats["other"] += pct
    symbols.sort(reverse=True)
    log(f"  perf: {steps} steps in {seconds:.1f} s")
    return {"steps": steps, "seconds": seconds, "categories": cats,
            "top_symbols": [{"pct": p, "dso": d_, "symbol": s} for p, d_, s in symbols[:12]]}


# -- main -----------------------------------------------------------------------------
def run_profile(args, grucy, log, command):
    """The --profile mode of bench_gru.py: print the breakdown, write JSON."""
    shapes = args.shapes or DEFAULT_SHAPES
    threads = args.threads or grucy.get_num_threads()
    limiter = limit_threads(args.threads, grucy, log)
    seconds = args.target_seconds or (0.5 if args.quick else 2.0)
    min_repeats = args.min_repeats or (3 if args.quick else 5)
    try:
        machine = machine_info(grucy, threads)
        machine["loadavg_start"] = loadavg()
        rows = []
        for s in shapes:
            load = loadavg()
            rows.append(profile_shape(s, grucy, seconds, min_repeats, args.seed, log))
            rows[-1]["loadavg_before"] = load
        ok, perf = perf_available()
        perf_rows = {}
        if ok:
            for s in shapes:
                B, T, I, H = s
                rng = np.random.default_rng(args.seed)
                layer = grucy.GRU(I, H, seed=args.seed)
                x = rng.standard_normal((T, B, I), dtype=np.float32)
                dy = rng.standard_normal((T, B, H), dtype=np.float32)

                def step():
                    layer.forward(x)
                    layer.backward(dy)
                step()
                row = perf_rows["x".join(map(str, s))] = perf_profile(
                    perf, step, 1.5 if args.quick else 4.0, log)
                row["loadavg_before"] = loadavg()
        else:
            log(f"bench_gru --profile: no sampling profile ({perf})")
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    machine["loadavg_end"] = loadavg()
    doc = {"benchmark": "grucy-profile", "format": 2, "command": command,
           "machine": machine, "threads": threads, "shapes": rows,
           "perf": perf_rows if ok else {"unavailable": perf}}
    print("\n".join(profile_lines(doc)))
    if args.json:
        write_atomic(args.json, json.dumps(doc, indent=1) + "\n")
        log(f"bench_gru --profile: wrote {args.json}")
    return 0


def profile_lines(doc):
    n = doc["threads"]
    m = doc["machine"]
    out = [f"Training step of grucy.GRU, float32, 1 layer, up to {n} thread"
           f"{'s' if n != 1 else ''}, the kernels' own phase timers: {doc['command']}",
           f"kernels: {m.get('kernels')}"]
    if m.get("loadavg_start") is not None:
        out.append(f"1-min load average {m['loadavg_start']:.2f} at start, "
                   f"{m['loadavg_end']:.2f} at end")
        warn = busy_warning(m)
        if warn:
            out.append(warn)
    for r in doc["shapes"]:
        p = r["plan"]
        out += ["", f"{r['label']}: {r['step_ms']:.3f} ms per step ({r['gflop']:.3g} GFLOP, "
                    f"{r['step_pct_fma']:.0f}% of the FMA peak of the threads used); plan: "
                    f"{p['threads']} threads, recurrence in {p['groups']} row groups x "
                    f"{p['chunks']} unit chunks; busiest thread "
                    f"{r['imbalance']:.2f}x the average"
                    + (f"; load {r['loadavg_before']:.2f} before"
                       if r.get("loadavg_before") is not None else "")]
        body = []
        for name, e in r["phases"].items():
            rate = (f"{e['gflops_per_thread']:.0f} GFLOP/s per thread, "
                    f"{e['pct_fma']:.0f}% of FMA peak" if "gflops_per_thread" in e else "")
            pct = f"{e['pct_kernel']:.1f}" if e.get("pct_kernel") is not None else ""
            body.append([PHASE_TITLES.get(name, name), f"{e['ms']:.3f}", pct, rate])
        out.append(text_table(["phase (average thread)", "ms/step", "% kernels", "rate"],
                              body, left=1))
    perf = doc["perf"]
    if "unavailable" in perf:
        return out + ["", f"Sampling profile: unavailable ({perf['unavailable']})"]
    perf = {k: p for k, p in perf.items() if "categories" in p}
    if perf:
        labels = list(next(iter(perf.values()))["categories"])
        out += ["", "Sampling profile (perf record -e cpu-clock, all threads; % of samples)"]
        body = [[lab] + [f"{p['categories'][lab]:.1f}" for p in perf.values()]
                for lab in labels]
        body.append(["(ms per step while sampling)"]
                    + [f"{1e3 * p['seconds'] / max(p['steps'], 1):.1f}" for p in perf.values()])
        out.append(text_table(["category"] + list(perf), body, left=1))
    return out
