"""What a benchmark run reports: the targets block, the printed report, the Markdown
tables for the README and the speedup plot, all from the run's JSON document."""

from __future__ import annotations

import io
import re

from _bench_machine import busy_warning
from _bench_sweep import NEVER_HURT
from _bench_timing import write_atomic

__all__ = ["evaluate_targets", "report_lines", "markdown_lines", "plot_speedups",
           "text_table"]

MODES = ("train", "infer")
MODE_TITLES = {"train": "Training step (forward + backward)", "infer": "Inference (forward)"}
BIG, MID = "256x50x256x512", "64x50x256x512"  # the sweep shapes the 16-thread targets name


LOWP_NAMES = ("grucy-bf16", "grucy-int8", "torch-int8")
# OpenBLAS's x86 cores without AVX: their kernels use SSE like grucy's x86 portable build
SSE_CORES = ("Katmai", "Coppermine", "Northwood", "Prescott", "Banias", "Core2",
             "Penryn", "Dunnington", "Nehalem", "Atom", "Athlon", "Opteron",
             "Opteron_SSE3", "Barcelona", "Nano", "Bobcat")


def _lowp(name):
    return name in LOWP_NAMES


# -- targets (issues 13, 18, 19) -----------------------------------------------------------
def evaluate_targets(doc):
    """For each target: measured figure, threshold, met / missed / not measured; the
    issue it comes from in ``issue``."""
    targets = []
    issue = [13]

    def add(name, text, value, op, threshold, where="", note=""):
        if value is None:
            status = "not measured"
        else:
            status = "met" if (value >= threshold if op == ">=" else value <= threshold) \
                else "missed"
        targets.append({"name": name, "target": text, "measured": value, "op": op,
                        "threshold": threshold, "where": where, "status": status,
                        "note": note, "issue": issue[0]})

    m, sweep, busy = doc["machine"], doc.get("sweep") or {}, doc.get("busy") or {}
    rows = {(r["label"], r["mode"]): r for r in sweep.get("rows", [])}
    counts = sweep.get("counts", [])
    many = 16 in counts and (m["usable_cpus"] or 0) >= 16
    why = "" if many else ("needs a sweep with 16 threads (--threads 1,...,16) on a "
                           "machine with at least 16 cores")

    def at16(label, mode, peer):
        r = rows.get((label, mode))
        v = (r or {}).get("speedup", {}).get(peer, {}).get("16") if many else None
        return v, (why or ("" if r else f"{label} not in --sweep-shapes"))

    for name, label, threshold in (("train_vs_torch_16t_big", BIG, 2.0),
                                   ("train_vs_torch_16t_mid", MID, 1.5)):
        v, note = at16(label, "train", "torch")
        add(name, f"16 threads: training {label} vs PyTorch", v, ">=", threshold,
            label if v is not None else "", note)
    r = rows.get((BIG, "train"))
    eff = (r["impls"]["grucy"]["efficiency"].get("16") if many and r and counts[0] == 1
           else None)
    add("efficiency_16t_big", f"16 threads: parallel efficiency T1/(16 T16), training {BIG}",
        eff, ">=", 0.5, BIG if eff is not None else "",
        why or ("" if r and counts[0] == 1 else f"needs 1 in --threads and {BIG} in "
                                                f"--sweep-shapes"))
    vals = [(r["speedup"]["onnxruntime"]["16"], label) for (label, mode), r in rows.items()
            if many and mode == "infer" and "16" in r["speedup"].get("onnxruntime", {})]
    worst = min(vals) if vals else (None, "")
    add("infer_vs_ort_16t", "16 threads: inference vs ONNX Runtime, every sweep shape "
        "(worst)", worst[0], ">=", 1.5, worst[1], why)
    add("threads_vs_mpi", "16 threads in one process at least as fast as the best MPI "
        "ranks x threads split", None, ">=", 1.0, "",
        "measured by bench/bench_mpi.py, not by this script")
    vals = [(v, f"{mode} {label} at {n}") for (label, mode), r in rows.items()
            for n, v in r["impls"]["grucy"]["vs_best_fewer"].items()]
    worst = max(vals) if len(counts) > 1 and vals else (None, "")
    add("more_threads_never_hurt", "time at n threads / best time at any count <= n, "
        "every sweep shape and mode (worst)", worst[0], "<=", NEVER_HURT, worst[1],
        "" if len(counts) > 1 else "needs a sweep (--threads with two or more counts)")

    two = ("" if m["usable_cpus"] == 2 else
           f"set for the 2-core machine; this one has {m['usable_cpus']} CPUs")
    core = {md: [r for r in doc["results"] if r["kind"] == "core" and r["mode"] == md]
            for md in MODES}
    vals = []
    for r in core["train"]:
        rivals = [r["speedup"][n] for n in ("torch", "numpy") if n in r["speedup"]]
        if rivals:
            vals.append((min(rivals), r["label"]))
    worst = min(vals) if vals else (None, "")
    add("train_vs_fastest", "training vs the fastest of PyTorch and NumPy, every core "
        "shape (worst)", worst[0], ">=", 1.5, worst[1], two)
    vals = [(r["speedup"]["onnxruntime"], r["label"]) for r in core["infer"]
            if "onnxruntime" in r["speedup"]]
    worst = min(vals) if vals else (None, "")
    add("infer_vs_ort", "inference vs ONNX Runtime, every core shape (worst)", worst[0],
        ">=", 1.1, worst[1], two)
    big = sorted(core["train"], key=lambda r: r["gflop"])[-2:]
    vals = [(r["impls"]["grucy"].get("pct_fma"), r["label"]) for r in big]
    vals = [v for v in vals if v[0] is not None]
    worst = min(vals) if vals else (None, "")
    add("train_pct_fma", "training GFLOP/s as % of the fp32 FMA peak, two largest core "
        "shapes (worst)", worst[0], ">=", 60.0, worst[1], two)

    brows = busy.get("rows", [])
    note = "" if brows else "needs --busy N"
    if brows and busy["threads"] != 2:
        note = f"set for 2 busy threads; this run had {busy['threads']}"
    # Medians, not minima: under load the minimum is the repeat the competing processes
    # happened to leave alone (a quiet time); a 2026-12-04 run had ONNX Runtime's busy
    # minimum at 0.54x its quiet one and called that a loss, while its busy median was
    # 2.5x grucy's.  The median is what a user of the busy machine waits.
    vals = [(r["impls"]["grucy"]["busy_over_quiet_median"], f"{r['mode']} {r['label']}")
            for r in brows if "busy_over_quiet_median" in r["impls"]["grucy"]]
    worst = max(vals) if vals else (None, "")
    add("busy_over_quiet", "busy machine: grucy's median time / its quiet median, every "
        "core shape (worst)", worst[0], "<=", 2.5, worst[1], note)
    vals = [(s, f"{r['mode']} {r['label']} vs {p}") for r in brows
            for p, s in r.get("speedup_median", {}).items() if not _lowp(p)]
    worst = min(vals) if vals else (None, "")
    add("busy_vs_peers", "busy machine: grucy vs every peer under the same load, median "
        "times (worst)", worst[0], ">=", 1.0, worst[1], note)

    # issue 18: low precision, from the core table (ratios of one run's minimum times)
    issue[0] = 18
    precisions = doc.get("options", {}).get("precisions") or []
    for key, prec, mode, text, threshold, which in (
            ("bf16_vs_fp32", "bf16", "train", "bf16 training vs grucy float32", 1.5, "big"),
            ("bf16_vs_fp32", "bf16", "infer", "bf16 inference vs grucy float32", 1.7, "big"),
            ("int8_vs_torch_int8", "int8", "infer", "int8 inference vs torch int8 dynamic",
             1.3, "all"),
            ("int8_vs_fp32", "int8", "infer", "int8 inference vs grucy float32", 2.5, "big")):
        rows = sorted(core[mode], key=lambda r: r["gflop"])
        rows = rows[-2:] if which == "big" else rows
        vals = [(r["lowp"][key], r["label"]) for r in rows if key in r.get("lowp", {})]
        worst = min(vals) if vals else (None, "")
        why = two
        if prec not in precisions:
            why = f"needs --precisions with {prec}"
        elif not vals and key == "int8_vs_torch_int8":
            why = "needs torch (the torch-int8 peer)"
        elif not vals:
            why = f"needs --modes {mode} on the core shapes"
        elif which == "all" and len(vals) < len(rows):
            why = "not every core shape has both figures"
        add(f"lowp_{key}_{mode}", f"{text}, {'two largest' if which == 'big' else 'every'} "
            f"core shape{'s' if which == 'big' else ''} (worst)", worst[0], ">=", threshold,
            worst[1], why)

    # issue 19: grucy's other kernels, when --isa put them in this run
    issue[0] = 19
    blas_core = m.get("kernels", {}).get("blas_core")
    x86 = re.search(r"x86_64|amd64|i[3-6]86", m.get("platform", ""), re.I)
    for isa, against in (("avx2", ("torch", "grucy-blas")), ("portable", ("grucy-blas",))):
        name = f"grucy-{isa}"
        rows_ = [r for r in doc["results"] if r["kind"] == "core"]
        if not any(name in r["speedup"] for r in rows_):
            continue
        for mode in MODES:
            for peer in against:
                if isa == "avx2" and mode == "train" and peer == "grucy-blas":
                    continue
                if isa == "portable" and mode == "train" and peer != "grucy-blas":
                    continue
                vals = []
                for r in rows_:
                    if r["mode"] != mode or name not in r["speedup"] or peer not in r["speedup"]:
                        continue
                    # speedup[x] = x's time / grucy's time, so x's time / isa's time:
                    vals.append((r["speedup"][peer] / r["speedup"][name], r["label"]))
                worst = min(vals) if vals else (None, "")
                threshold = 1.0 if isa == "portable" else 1.5
                if peer == "torch":
                    note = "PyTorch restricted to AVX2 only with ATEN_CPU_CAPABILITY=avx2"
                elif isa == "portable" and x86 and blas_core not in SSE_CORES:
                    # the x86 portable build is SSE2 without FMA: against OpenBLAS's
                    # AVX2/AVX-512 kernels it compares instruction sets, not packing
                    note = (f"BLAS path on OpenBLAS core {blas_core or '- (not OpenBLAS)'};"
                            " on portable's instruction set: OPENBLAS_CORETYPE=Nehalem")
                else:
                    note = ""
                add(f"{isa}_{mode}_vs_{peer}", f"GRUCY_ISA={isa}: {mode} vs {peer}, every "
                    f"core shape (worst)", worst[0], ">=", threshold, worst[1], note)
    return targets


# -- text -------------------------------------------------------------------------------------
def text_table(head, body, left=1):
    """Columns padded to width; the first ``left`` columns (or the column indices in the
    set ``left``) left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    lefts = set(range(left)) if isinstance(left, int) else set(left)

    def line(cells):
        return "  ".join(c.ljust(w) if i in lefts else c.rjust(w)
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


def _pct(r, key):
    return f"{r[key]:.0f}" if r.get(key) is not None else "-"


def mode_table(rows, mode, peers):
    """The main table of one mode: times of every implementation and the ratios."""
    rows = [r for r in rows if r["mode"] == mode]
    peers = [p for p in peers if any(p in r["impls"] for r in rows)]
    head = (["case", "reps", "grucy ms"] + [f"{p} ms" for p in peers]
            + [f"x {p}" for p in peers] + ["x fastest", "GFLOP/s", "% FMA", "% SGEMM",
                                           "check"])
    body = []
    for r in rows:
        g = r["impls"]["grucy"]
        cells = [r["label"], str(g["repeats"]), _ms(g)]
        cells += [_ms(r["impls"].get(p)) for p in peers]
        cells += [f"{r['speedup'][p]:.2f}" if p in r["speedup"] else "-" for p in peers]
        cells.append(f"{r['speedup_vs_fastest']:.2f} {r['fastest_peer']}"
                     if "fastest_peer" in r else "-")
        cells += [f"{g['gflops']:.1f}", _pct(g, "pct_fma"), _pct(g, "pct_sgemm")]
        cells.append("-" if r["max_rel_diff"] is None else
                     f"{'ok' if r['checks_ok'] else 'FAIL'} {r['max_rel_diff']:.0e}")
        body.append(cells)
    return text_table(head, body)


def sweep_table(row, counts):
    impls = list(row["impls"])
    head = ["threads"]
    for name in impls:
        head += [f"{name} ms", "eff"] + ([f"x {name}"] if name != "grucy" else
                                         ["GFLOP/s", "% FMA", "% SGEMM"])
    body = []
    for n in counts:
        k, cells = str(n), [str(n)]
        for name in impls:
            d = row["impls"][name]
            r = d["by_threads"].get(k, {})
            if r.get("status") != "ok":
                cells += [r.get("status", "-"), "-"] + ["-"] * (3 if name == "grucy" else 1)
                continue
            hurt = " !" if d["vs_best_fewer"].get(k, 1.0) > NEVER_HURT else ""
            cells += [_fmt(r["ms_min"]) + hurt,
                      f"{d['efficiency'][k]:.2f}" if k in d["efficiency"] else "-"]
            if name == "grucy":
                cells += [f"{r['gflops']:.1f}", _pct(r, "pct_fma"), _pct(r, "pct_sgemm")]
            else:
                s = row["speedup"].get(name, {}).get(k)
                cells.append("-" if s is None else f"{s:.2f}")
        body.append(cells)
    return text_table(head, body)


def header_lines(doc):
    m, opts = doc["machine"], doc["options"]
    k = m["kernels"]
    out = [f"grucy benchmark{', --quick' if opts['quick'] else ''}: {doc['command']}"]
    flags = ", ".join(m["cpu_flags"]) or "none of avx2/fma/avx512f"
    out.append(f"CPU      {m['cpu']} ({flags}); {m['usable_cpus']} usable of "
               f"{m['logical_cpus']} logical CPUs")
    out.append(f"Python   {m['python']} on {m['platform']}")
    out.append(f"numpy    {m['numpy']}   scipy {m['scipy']}   grucy {m['grucy']} "
               f"(its own thread team; OMP_WAIT_POLICY={m['omp_wait_policy']} for the "
               f"peers' OpenMP)")
    out.append(f"kernels  grucy: products with the weights {k['packed']}, row passes "
               f"{k['rows']}; OpenBLAS core {k['blas_core'] or '- (not OpenBLAS)'} "
               f"(scipy's, which grucy calls); BLAS inside grucy's kernels kept "
               f"single-threaded by {k['blas_threads']}")
    threads = f"threads  {m['threads']} for grucy and every peer"
    if doc.get("sweep", {}).get("counts"):
        threads += f"; thread sweep at {','.join(map(str, doc['sweep']['counts']))}"
    out.append(threads)
    for b in m["blas"] or []:
        if b["user_api"] == "openmp":
            out.append(f"OpenMP   threads={b['num_threads']} ({b['library']})")
        else:
            out.append(f"BLAS     {b['internal_api']} {b['version']} architecture "
                       f"{b['architecture']} threads={b['num_threads']} ({b['library']})")
    if m["blas"] is None:
        out.append("BLAS     (install threadpoolctl to list BLAS libraries and threads)")
    out += [f"WARNING  {w}" for w in m["warnings"]]
    if m.get("loadavg_start") is not None:
        out.append(f"load     1-min load average {m['loadavg_start']:.2f} at start, "
                   f"{m['loadavg_quiet_end']:.2f} after the quiet cases, on "
                   f"{m['usable_cpus']} CPUs")
    p = doc["peaks"]
    out.append(f"FMA      {p['fma_gflops']:.1f} GFLOP/s float32 at {_threads(p['threads'])} "
               f"(grucy._gru.fma_peak: independent vector FMA chains; best of the start "
               f"{p['fma_start']:.1f}, the end {p['fma_end']:.1f}"
               + (f" and the sweep {p['fma_sweep']:.1f}" if p.get("fma_sweep") else "")
               + " of the run)")
    for dt, g in p["gemm"].items():
        out.append(f"GEMM     {g['n']}^3 {dt} at {_threads(p['threads'])}: numpy "
                   f"{g['numpy_gflops']:.1f}, scipy {g['scipy_gflops']:.1f} GFLOP/s -> "
                   f"peak {g['gflops']:.1f} GFLOP/s (best of the run, as the FMA peak)")
    out.append("peers    " + "; ".join(f"{n}: {s['detail']}" for n, s in doc["peers"].items()))
    return out


def lowp_lines(doc):
    """The low-precision table: times per core shape and mode, ratios, output errors."""
    rows = [r for r in doc["results"] if r["kind"] == "core" and r.get("lowp")]
    names = [n for n in LOWP_NAMES if n in doc["peers"]]
    if not rows or not names:
        return []
    head = ["case", "mode", "grucy fp32 ms"] + [f"{n} ms" for n in names] + [
        "bf16 x fp32", "int8 x fp32", "int8 x torch-int8"] + [f"err {n}" for n in names]
    body = []
    for r in rows:
        lp = r["lowp"]
        cells = [r["label"], r["mode"], _ms(r["impls"]["grucy"])]
        cells += [_ms(r["impls"].get(n)) for n in names]
        cells += [f"{lp[k]:.2f}" if k in lp else "-"
                  for k in ("bf16_vs_fp32", "int8_vs_fp32", "int8_vs_torch_int8")]
        cells += [f"{lp['error'][n]:.1e}" if n in lp["error"] else "-" for n in names]
        body.append(cells)
    return ["", "Low precision (issue 18): ms min / median; a x b = time of b / time of a "
                "(> 1: the low-precision one is faster); err = max |impl - grucy float32| / "
                "max |grucy float32| over the outputs (and, training, the input and "
                "parameter gradients)", text_table(head, body, left=2)]


def _targets_lines(doc, issue, title):
    body = []
    for t in doc["targets"]:
        if t.get("issue", 13) != issue:
            continue
        v = t["measured"]
        body.append([t["target"], "-" if v is None else f"{v:.4g}",
                     f"{t['op']} {t['threshold']:g}", t["status"].upper()
                     if t["status"] != "not measured" else "not measured",
                     "; ".join(x for x in (t["where"], t["note"]) if x)])
    if not body:
        return []
    return ["", title, text_table(["target", "measured", "threshold", "status",
                                   "where / note"], body, left={0, 3, 4})]


def report_lines(doc):
    """The printed report."""
    out = header_lines(doc)
    rows, peers = doc["results"], [p for p in doc["peers"] if not _lowp(p)]
    order = doc["options"].get("order", "blocked")
    for mode in MODES:
        if any(r["mode"] == mode for r in rows):
            out += ["", f"{MODE_TITLES[mode]}: ms min / median of {order} repeats; "
                        f"x PEER = PEER min / grucy min (> 1: grucy faster); % of the FMA "
                        f"and SGEMM peaks (float64: of the DGEMM peak)",
                    mode_table(rows, mode, peers)]
    out += lowp_lines(doc)
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
    out += sweep_lines(doc.get("sweep") or {})
    out += busy_lines(doc.get("busy") or {})
    out += stream_lines(doc.get("streaming"))
    out += memory_lines(doc.get("memory"))
    out += _targets_lines(doc, 13, "Targets (issue 13)")
    out += _targets_lines(doc, 18, "Targets (issue 18: low precision; 2 threads)")
    out += _targets_lines(doc, 19, "Targets (issue 19: grucy's other GEMM kernels, --isa)")
    if doc["failures"]:
        out += ["", "CHECK FAILURES (these peers were not timed):"]
        out += [f"  {f}" for f in doc["failures"]]
    out.append("")
    out.append(f"Ratios from minimum times; on a shared machine compare ratios, not "
               f"absolute times.  Total {doc['elapsed_seconds']:.0f} s.")
    if busy_warning(doc["machine"]):
        out.append(busy_warning(doc["machine"]))
    return out


def sweep_lines(sweep):
    if not sweep.get("rows"):
        return ["", f"Thread sweep: not measured ({sweep['skipped']})"] \
            if sweep.get("skipped") else []
    counts = sweep["counts"]
    base = counts[0]
    eff = "T1/(n Tn)" if base == 1 else f"{base} T{base}/(n Tn)"
    out = ["", f"Thread sweep ({', '.join(map(str, counts))} threads, ascending per shape): "
               f"ms min; eff = {eff}; x PEER = PEER / grucy at the same count; "
               f"'!' = slower than {NEVER_HURT} x the best time at fewer threads; % of the "
               f"peaks at that count"]
    peaks = sweep["peaks"]
    out.append("peaks: " + "; ".join(
        f"{_threads(int(n))} FMA {p['fma_gflops']:.0f}, SGEMM "
        f"{max(p['gemm']['float32'].values()):.0f}" for n, p in peaks.items())
        + " GFLOP/s")
    for row in sweep["rows"]:
        out += ["", f"{MODE_TITLES[row['mode']]}, {row['label']}", sweep_table(row, counts)]
    return out


def busy_lines(busy):
    if not busy.get("rows"):
        return []
    out = ["", f"Busy machine: {busy['method']}; ms min / median quiet (the tables above) "
               f"and busy; busy/quiet and x grucy (this implementation's busy time / "
               f"grucy's) of the medians (under load a minimum is the repeat the load "
               f"left alone)",
           f"load average {busy['loadavg_start']:.2f} when the load started, "
           f"{busy['loadavg_end']:.2f} at its end; competing processes "
           f"{'stopped' if busy['stopped'] else 'STILL RUNNING'}"]
    body = []
    for r in busy["rows"]:
        for name, d in r["impls"].items():
            if d.get("status") != "ok":
                body.append([r["label"], r["mode"], name, "-", d.get("status") or "-",
                             "-", "-"])
                continue
            med = r.get("speedup_median", {})
            body.append([r["label"], r["mode"], name,
                         f"{_fmt(d['quiet_ms'])} / {_fmt(d['quiet_median_ms'])}"
                         if "quiet_ms" in d else "-",
                         f"{_fmt(d['busy']['ms_min'])} / {_fmt(d['busy']['ms_median'])}",
                         f"{d['busy_over_quiet_median']:.2f}"
                         if "busy_over_quiet_median" in d else "-",
                         f"{med[name]:.2f}" if name in med else "-"])
    out.append(text_table(["case", "mode", "impl", "quiet ms", "busy ms", "busy/quiet",
                           "x grucy"], body, left=3))
    return out


def stream_lines(st):
    if not st:
        return []
    out = ["", f"Streaming, B=1, I={st['I']}, H={st['H']}: microseconds per step call "
               f"(min / median over samples of {st['steps_per_sample']} calls)"]
    body = []
    for name, r in st["impls"].items():
        t = (f"{r['us_min']:.1f} / {r['us_median']:.1f}" if "us_min" in r
             else r.get("status", "?"))
        body.append([name, t, r.get("api", r.get("detail", ""))])
    for name, why in st["notes"].items():
        body.append([name, "-", why])
    out.append(text_table(["implementation", "us/call", "API"], body, left=1))
    return out


def memory_lines(mem):
    if not mem:
        return []
    out = ["", "Peak memory of one training step, MiB above the memory before it "
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
    return out


# -- Markdown -----------------------------------------------------------------------------
def _targets_markdown(doc, issue):
    """The targets of ``issue`` (18, 19) as a Markdown table with where each was worst."""
    ts = [t_ for t_ in doc["targets"] if t_.get("issue") == issue]
    if not ts:
        return []
    return ["", markdown_table(
        [f"target (issue {issue})", "measured", "threshold", "status", "where / note"],
        [[t_["target"], "-" if t_["measured"] is None else f"{t_['measured']:.4g}",
          f"{t_['op']} {t_['threshold']:g}", t_["status"],
          "; ".join(x for x in (t_["where"], t_["note"]) if x)]
         for t_ in ts])]


def _ok_ms(row, name):
    """Minimum ms of ``name`` in a result row, "-" when it did not run or failed."""
    d = row["impls"].get(name)
    return _fmt(d["ms_min"]) if d and d.get("status") == "ok" else "-"


def markdown_lines(doc):
    """The README tables: core shapes, the thread sweep, the busy machine, the targets."""
    m, p = doc["machine"], doc["peaks"]
    gemm = p["gemm"].get("float32", {})
    out = [f"Machine: {m['cpu']}, {m['usable_cpus']} CPUs ({', '.join(m['cpu_flags'])}); "
           f"numpy {m['numpy']}, scipy {m['scipy']}; OpenBLAS core "
           f"{m['kernels']['blas_core']}; {_threads(m['threads'])} for every "
           f"implementation; peaks in the same run at that count: FMA "
           f"{p['fma_gflops']:.0f} GFLOP/s, SGEMM {gemm.get('n')}^3 "
           f"{gemm.get('gflops', float('nan')):.0f} GFLOP/s. Peers: "
           + ", ".join(f"{n} {s['detail']}" for n, s in doc["peers"].items()) + "."]
    out += [f"OpenBLAS variables: {', '.join(f'{k}={v}' for k, v in m['openblas_env'].items())}"
            if m["openblas_env"] else "OpenBLAS variables: none set."]
    out += ["", f"Command: `{doc['command']}` ({doc['date'][:10]}). Times are the minimum "
                f"of {doc['options'].get('order', 'blocked')} repeats, in ms; speedup = "
                f"peer time / grucy time.", ""]
    rows = [r for r in doc["results"] if r["kind"] == "core"]
    by = {(r["label"], r["mode"]): r for r in rows}

    def t(r, n):
        d = r["impls"].get(n) if r else None
        return _fmt(d["ms_min"]) if d and d.get("status") == "ok" else "-"

    def ratio(v):
        return "-" if v is None else f"{v:.2f}x"

    if rows:
        head = ["B x T x I x H", "train: grucy", "PyTorch", "NumPy", "speedup vs fastest",
                "% FMA", "infer: grucy", "ONNX Runtime", "PyTorch", "speedup vs ONNX RT"]
        body = []
        for label in dict.fromkeys(r["label"] for r in rows):
            tr, inf = by.get((label, "train")), by.get((label, "infer"))
            pct = (tr or {}).get("impls", {}).get("grucy", {}).get("pct_fma")
            body.append([label, t(tr, "grucy"), t(tr, "torch"), t(tr, "numpy"),
                         ratio((tr or {}).get("speedup_vs_fastest")),
                         "-" if pct is None else f"{pct:.0f}%",
                         t(inf, "grucy"), t(inf, "onnxruntime"), t(inf, "torch"),
                         ratio((inf or {}).get("speedup", {}).get("onnxruntime"))])
        out += [markdown_table(head, body), ""]
    sweep = doc.get("sweep") or {}
    if sweep.get("rows"):
        sw = {(r["label"], r["mode"]): r for r in sweep["rows"]}
        head = ["B x T x I x H", "threads", "grucy train ms", "torch train ms",
                "speedup vs torch", "grucy efficiency", "grucy infer ms", "ORT infer ms",
                "speedup vs ORT"]
        body = []
        for label in dict.fromkeys(r["label"] for r in sweep["rows"]):
            tr, inf = sw.get((label, "train")), sw.get((label, "infer"))
            for n in map(str, sweep["counts"]):
                def ms(r, name):
                    d = (r or {}).get("impls", {}).get(name, {}).get("by_threads", {})
                    return _fmt(d[n]["ms_min"]) if d.get(n, {}).get("status") == "ok" else "-"
                e = (tr or {}).get("impls", {}).get("grucy", {}).get("efficiency", {}).get(n)
                body.append([label, n, ms(tr, "grucy"), ms(tr, "torch"),
                             ratio((tr or {}).get("speedup", {}).get("torch", {}).get(n)),
                             "-" if e is None else f"{100 * e:.0f}%",
                             ms(inf, "grucy"), ms(inf, "onnxruntime"),
                             ratio((inf or {}).get("speedup", {}).get("onnxruntime",
                                                                      {}).get(n))])
        out += [markdown_table(head, body, left=2), ""]
    busy = doc.get("busy") or {}
    if busy.get("rows"):
        body = [[r["label"], r["mode"], name, _fmt(d["quiet_median_ms"]),
                 _fmt(d["busy_median_ms"]), f"{d['busy_over_quiet_median']:.2f}x",
                 ratio(r.get("speedup_median", {}).get(name))]
                for r in busy["rows"] for name, d in r["impls"].items()
                if "busy_median_ms" in d]
        out += [f"Busy machine ({busy['method']}), median times (under load a minimum is "
                f"the repeat the load left alone):", "",
                markdown_table(["B x T x I x H", "mode", "impl", "quiet ms", "busy ms",
                                "busy / quiet", "impl busy / grucy busy"], body, left=3), ""]
    out.append(markdown_table(
        ["target (issue 13)", "measured", "threshold", "status"],
        [[t_["target"], "-" if t_["measured"] is None else f"{t_['measured']:.4g}",
          f"{t_['op']} {t_['threshold']:g}", t_["status"]] for t_ in doc["targets"]
         if t_.get("issue", 13) == 13]))
    lrows = [r for r in rows if r.get("lowp")]
    if lrows:
        body = [[r["label"], r["mode"], _ok_ms(r, "grucy"), _ok_ms(r, "grucy-bf16"),
                 ratio(r["lowp"].get("bf16_vs_fp32")), _ok_ms(r, "grucy-int8"),
                 ratio(r["lowp"].get("int8_vs_fp32")), _ok_ms(r, "torch-int8"),
                 ratio(r["lowp"].get("int8_vs_torch_int8"))] for r in lrows]
        out += ["", markdown_table(["B x T x I x H", "mode", "grucy fp32 ms", "bf16 ms",
                                    "bf16 speedup", "int8 ms", "int8 speedup",
                                    "torch int8 ms", "int8 vs torch int8"], body, left=2)]
    out += _targets_markdown(doc, 18)
    isas = [n for n in ("grucy-avx2", "grucy-portable", "grucy-blas")
            if any(n in r["impls"] for r in rows if r["kind"] == "core")]
    if isas:  # issue 19: one column per GEMM kernel (--isa), the peers beside them
        names = ["grucy"] + isas + [n for n in ("torch", "onnxruntime")
                                    if any(n in r["impls"] for r in rows)]
        head = ["B x T x I x H", "mode", f"grucy {m['kernels'].get('packed', '')} ms"] + \
            [f"{n} ms" for n in names[1:]]
        body = [[r["label"], r["mode"]] + [_ok_ms(r, n) for n in names]
                for r in rows if r["kind"] == "core"]
        out += ["", "GEMM kernels (`--isa`): minimum ms of each, same weights and data:", "",
                markdown_table(head, body, left=2)]
    out += _targets_markdown(doc, 19)
    if busy_warning(m):
        out += ["", busy_warning(m)]
    return out


# -- plot ---------------------------------------------------------------------------------
def plot_speedups(doc, path):
    """Bar chart of grucy's speedup over each peer on the core shapes; False without
    matplotlib.  Uses the Agg canvas directly, so no pyplot state or backend is touched."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import NullFormatter, ScalarFormatter
    except ImportError:
        return False

    rows = [r for r in doc["results"] if r["kind"] == "core"]
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    fig = Figure(figsize=(6.5 * max(len(modes), 1), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    targets = {"train": (1.5, "target vs fastest"), "infer": (1.1, "target vs ONNX RT")}
    for k, mode in enumerate(modes, 1):
        ax = fig.add_subplot(1, len(modes), k)
        mr = [r for r in rows if r["mode"] == mode]
        peers = [p for p in doc["peers"] if not _lowp(p)
                 and any(p in r["speedup"] for r in mr)]
        width = 0.8 / max(len(peers), 1)
        for j, p in enumerate(peers):
            xs = [i + (j - (len(peers) - 1) / 2) * width for i in range(len(mr))]
            bars = ax.bar(xs, [r["speedup"].get(p, 0) for r in mr], width, label=f"vs {p}")
            ax.bar_label(bars, fmt="%.2g", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        value, text = targets[mode]
        ax.axhline(value, color="red", linestyle="--", linewidth=0.8, label=text)
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
