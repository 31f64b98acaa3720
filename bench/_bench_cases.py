"""The timed cases of one benchmark run: the configuration (:class:`Bench`), one case
checked then timed (:meth:`Bench.time_case`), the main groups (core shapes, bidir,
float64, variable lengths) and the peak memory of a training step (fresh processes)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time

import numpy as np

import _bench_peers as bp
from _bench_machine import loadavg
from _bench_timing import Entry, max_rel_diff, measure, stats

__all__ = ["Bench", "CHECK_TOL", "prob_label", "run_timed_groups", "run_memory",
           "memory_child"]

HERE = os.path.dirname(os.path.abspath(__file__))
# Agreement required before a peer is timed: max |peer - grucy| / max |grucy| over every
# output and gradient.  Two correct float32 GRUs differ by ~1e-6 here; float64 by ~1e-15.
CHECK_TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


class Bench:
    """Configuration and results of one run."""

    def __init__(self, args, grucy, log, threads):
        self.args, self.grucy, self.log = args, grucy, log
        self.threads = threads  # the run's thread count (the largest of --threads)
        self.target = args.target_seconds or (0.25 if args.quick else 3.0)
        self.min_repeats = args.min_repeats or (3 if args.quick else 5)
        self.subject = bp.SUBJECT
        self.peer_status = {}
        for name in args.peers:
            ok, detail = bp.PEERS[name].status()
            self.peer_status[name] = {"available": ok, "detail": detail}
        # low precision (--precisions): grucy's bf16 and int8, and torch's dynamic int8
        # GRU when torch is a peer of the run
        precisions = getattr(args, "precisions", None) or []
        self.lowp = [n for n, cls in bp.LOWP.items() if cls.PRECISION in precisions
                     and (not n.startswith("torch") or "torch" in args.peers)]
        for name in self.lowp:
            ok, detail = bp.LOWP[name].status()
            self.peer_status[name] = {"available": ok, "detail": detail, "lowp": True}
        self.failures = []   # peer checks that failed (the run exits with status 1)

    def impl(self, name):
        return bp.PEERS.get(name) or bp.LOWP[name]

    def available_peers(self, mode=None):
        return [n for n in self.args.peers if self.peer_status[n]["available"]
                and (mode is None or mode in bp.PEERS[n].MODES)]

    def available_lowp(self, mode=None):
        return [n for n in self.lowp if self.peer_status[n]["available"]
                and (mode is None or mode in bp.LOWP[n].MODES)]

    def tol(self, dtype, name=None):
        own = getattr(self.impl(name), "CHECK_TOL", None) if name else None
        return own if own is not None else CHECK_TOL[np.dtype(dtype)]

    # One timed case: every implementation on one or more variants of the same problem.
    def time_case(self, variants, mode, peers=None, threads=None, lowp=False):
        """variants: [(tag, Problem)], timed together; returns {tag: {impl: result}}.

        ``threads``: what the peers are built with (torch.set_num_threads, ONNX Runtime's
        intra_op_num_threads); grucy's and BLAS's count is the caller's to set.
        ``lowp``: the low-precision implementations too (core, bidir, varlen cases)."""
        peers = self.available_peers(mode) if peers is None else peers
        if lowp:
            peers = list(peers) + self.available_lowp(mode)
        threads = threads or self.threads
        entries, results, impls, warm = [], {}, [], {}
        for tag, prob in variants:
            res = results[tag] = {}
            subject = self.subject(prob, threads)
            t0 = time.perf_counter()
            ref = subject.train_outputs() if mode == "train" else subject.infer_outputs()
            warm[(tag, "grucy")] = time.perf_counter() - t0
            impls.append(subject)
            res["grucy"] = {"status": "ok"}
            entries.append(Entry((tag, "grucy"), getattr(subject, _method(mode))))
            for name in peers:
                cls = self.impl(name)
                try:
                    peer = cls(prob, threads)
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
                tol = self.tol(prob.dtype, name)
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
        for (tag, name), ts in times.items():
            prob = dict(variants)[tag]
            results[tag][name].update(stats(ts, prob.flops(mode)))
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
        full = [n for n in row["speedup"] if n not in bp.LOWP]   # (float32 peers only)
        if full:
            fastest = min(full, key=lambda n: res[n]["ms_min"])
            row["fastest_peer"] = fastest
            row["speedup_vs_fastest"] = row["speedup"][fastest]
        row["lowp"] = _lowp_ratios(res)
        checks = [r["max_rel_diff"] for n, r in res.items()
                  if "max_rel_diff" in r and n not in bp.LOWP]
        row["max_rel_diff"] = max(checks) if checks else None
        row["checks_ok"] = all(r.get("status") != "mismatch" for r in res.values())
        return row


def _lowp_ratios(res):
    """Low-precision speedups from minimum times (> 1: the first named is slower): bf16
    and int8 over grucy's float32, grucy's int8 over torch's; and the output errors of
    the checks (max |impl - grucy float32| / max |grucy float32|)."""
    ms = {n: r["ms_min"] for n, r in res.items() if r.get("status") == "ok"}
    out = {}
    for key, slow, fast in (("bf16_vs_fp32", "grucy", "grucy-bf16"),
                            ("int8_vs_fp32", "grucy", "grucy-int8"),
                            ("int8_vs_torch_int8", "torch-int8", "grucy-int8"),
                            ("torch_int8_vs_fp32", "grucy", "torch-int8")):
        if slow in ms and fast in ms:
            out[key] = ms[slow] / ms[fast]
    out["error"] = {n: r["max_rel_diff"] for n, r in res.items()
                    if n in bp.LOWP and "max_rel_diff" in r}
    return out


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


def run_timed_groups(bench, shapes):
    """core, bidir, float64, varlen: rows of the main tables, and the varlen ratios."""
    args, log = bench.args, bench.log
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
            res = bench.time_case(variants, mode, lowp=kind != "float64")
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

    impl, shape, dtype, threads, seed = spec.split(":")
    shape, threads = tuple(int(v) for v in shape.split("x")), int(threads)
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
    """Peak memory of one training step per implementation and shape, fresh processes
    (``bench_gru.py --memory-child``, importing the same grucy as this process)."""
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
            cmd = [sys.executable, os.path.join(HERE, "bench_gru.py"), "--memory-child", spec]
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
