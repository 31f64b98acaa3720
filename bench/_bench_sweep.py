"""Many threads and busy machines: the thread sweep and the busy-machine mode.

* :func:`run_sweep`: grucy, PyTorch and ONNX Runtime at every thread count of the sweep
  (ascending, shape after shape), training and inference, with the machine's FMA and
  SGEMM peaks at each count; derived: parallel efficiency T1 / (n Tn) and whether more
  threads ever hurt (time at n against the best time at any count <= n).
* :func:`run_busy`: every implementation on the core shapes while other processes keep
  N threads busy, against its quiet time.
"""

from __future__ import annotations

import time

import _bench_peers as bp
from _bench_cases import prob_label
from _bench_machine import BusyLoad, ThreadSetting, loadavg, measure_peaks

__all__ = ["SWEEP_PEERS", "NEVER_HURT", "run_sweep", "run_busy"]

SWEEP_PEERS = ("torch", "onnxruntime")
NEVER_HURT = 1.1  # time at n threads <= 1.1 x the best time at any count <= n


def run_sweep(bench, shapes, counts):
    """The thread sweep: ``{"counts", "peers", "peaks": {n: ..}, "rows": [...]}``.

    A row (one shape and mode) holds, per implementation, ``by_threads`` {n: timing},
    ``efficiency`` {n: T_base * base / (n T_n)} (base: the smallest count, normally 1)
    and ``vs_best_fewer`` {n: T_n / min(T_m, m <= n)}; and ``speedup`` {peer: {n: peer
    time / grucy time}}."""
    args, log = bench.args, bench.log
    peers = [p for p in SWEEP_PEERS if p in bench.available_peers()]
    out = {"counts": list(counts), "peers": peers, "peaks": {}, "rows": []}
    for n in counts:
        with ThreadSetting(n, bench.grucy, log):
            p = out["peaks"][str(n)] = measure_peaks(
                n, args.gemm_size, 3, fma_seconds=0.1 if args.quick else 0.3)
        log(f"  sweep peaks at {n} threads: FMA {p['fma_gflops']:.0f}, SGEMM "
            f"{max(p['gemm']['float32'].values()):.0f} GFLOP/s")
    for shape in shapes:
        prob = bp.Problem(*shape, seed=args.seed)
        for mode in args.modes:
            t0 = time.perf_counter()
            row = {"label": prob_label(prob), "mode": mode, "B": prob.B, "T": prob.T,
                   "I": prob.I, "H": prob.H, "gflop": prob.flops(mode) / 1e9, "impls": {}}
            mode_peers = [q for q in peers if mode in bp.PEERS[q].MODES]
            for n in counts:
                with ThreadSetting(n, bench.grucy, log):
                    res = bench.time_case([("main", prob)], mode, peers=mode_peers,
                                          threads=n)["main"]
                for name, r in res.items():
                    row["impls"].setdefault(name, {"by_threads": {}})["by_threads"][str(n)] = r
            _derive(row, counts, out["peaks"])
            out["rows"].append(row)
            g = row["impls"]["grucy"]["by_threads"]
            log(f"  sweep {row['label']:>16} {mode:5} grucy "
                + " ".join(f"{n}:{g[str(n)]['ms_min']:.3g}" for n in counts)
                + f" ms  ({time.perf_counter() - t0:.1f} s)")
    return out


def _derive(row, counts, peaks):
    base = counts[0]
    for d in row["impls"].values():
        ms = {n: d["by_threads"][str(n)]["ms_min"] for n in counts
              if d["by_threads"].get(str(n), {}).get("status") == "ok"}
        d["efficiency"] = ({str(n): base * ms[base] / (n * t) for n, t in ms.items()}
                           if base in ms else {})
        d["vs_best_fewer"] = {str(n): t / min(ms[m] for m in ms if m <= n)
                              for n, t in ms.items()}
        for n in ms:
            r, p = d["by_threads"][str(n)], peaks[str(n)]
            if "gflops" in r:
                r["pct_fma"] = 100.0 * r["gflops"] / p["fma_gflops"]
                r["pct_sgemm"] = 100.0 * r["gflops"] / max(p["gemm"]["float32"].values())
    g = row["impls"]["grucy"]["by_threads"]
    row["speedup"] = {}
    for name, d in row["impls"].items():
        if name == "grucy":
            continue
        row["speedup"][name] = {
            str(n): d["by_threads"][str(n)]["ms_min"] / g[str(n)]["ms_min"] for n in counts
            if d["by_threads"].get(str(n), {}).get("status") == "ok"
            and g.get(str(n), {}).get("status") == "ok"}


def run_busy(bench, shapes, quiet_rows, n_busy):
    """grucy and every peer on ``shapes`` (both modes of the run) while ``n_busy``
    spinning processes compete for the cores, against their quiet times (the core rows
    of this run; a shape without one is measured quietly first)."""
    args, log = bench.args, bench.log
    quiet = {(r["label"], r["mode"]): r for r in quiet_rows if r["kind"] == "core"}
    plan = [(bp.Problem(*s, seed=args.seed), mode) for s in shapes for mode in args.modes]
    for prob, mode in plan:
        key = (prob_label(prob), mode)
        if key not in quiet:
            res = bench.time_case([("main", prob)], mode)["main"]
            quiet[key] = bench.summarize_case("core", prob, mode, res)
    out = {"threads": n_busy, "rows": [],
           "method": f"{n_busy} processes, each one thread spinning in a pure Python "
                     f"loop, started before and stopped after the busy measurements"}
    load = BusyLoad(n_busy)
    with load:
        out["pids"] = load.pids
        out["loadavg_start"] = loadavg()
        log(f"bench_gru: busy machine: {n_busy} spinning processes "
            f"(pids {', '.join(map(str, load.pids))})")
        for prob, mode in plan:
            t0 = time.perf_counter()
            res = bench.time_case([("main", prob)], mode)["main"]
            q = quiet[(prob_label(prob), mode)]["impls"]
            row = {"label": prob_label(prob), "mode": mode, "impls": {}, "speedup": {}}
            for name, r in res.items():
                d = row["impls"][name] = {"status": r.get("status"), "busy": r}
                if r.get("status") == "ok" and q.get(name, {}).get("status") == "ok":
                    d.update(quiet_ms=q[name]["ms_min"], busy_ms=r["ms_min"],
                             busy_over_quiet=r["ms_min"] / q[name]["ms_min"],
                             quiet_median_ms=q[name]["ms_median"],
                             busy_median_ms=r["ms_median"],
                             busy_over_quiet_median=r["ms_median"] / q[name]["ms_median"])
            g = res["grucy"]
            row["speedup_median"] = {}
            for name, r in res.items():
                if name != "grucy" and r.get("status") == "ok":
                    row["speedup"][name] = r["ms_min"] / g["ms_min"]
                    row["speedup_median"][name] = r["ms_median"] / g["ms_median"]
            out["rows"].append(row)
            gq = row["impls"]["grucy"].get("busy_over_quiet_median")
            log(f"  busy {row['label']:>16} {mode:5} grucy median {g['ms_median']:.3f} ms"
                + (f" (x{gq:.2f} quiet)" if gq else "") + "  "
                + "  ".join(f"{n} x{s:.2f}" for n, s in row["speedup_median"].items())
                + f"  ({time.perf_counter() - t0:.1f} s)")
        out["loadavg_end"] = loadavg()
    out["stopped"] = all(p.returncode is not None for p in load.procs)
    return out
