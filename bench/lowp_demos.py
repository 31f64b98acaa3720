#!/usr/bin/env python
"""The three demos (src/grucy/demo.py: same data, splits, settings and seed) trained and
run in float32, trained and run in bf16 (``precision="bf16"``), and trained in float32
then run in int8 (``grucy.quantize``), against issue 18's budgets: sunspots RMSE within
3%, digits accuracy within 1 point, CharLM within 0.03 bits per character of float32.

    python bench/lowp_demos.py [--demos forecast,classify,lm] [--seed 0] [--json PATH]

The figures do not depend on the machine's load (seeded, and the kernels give the same
bits on any CPU and thread count); the digits demo needs scikit-learn (its dataset).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from _bench_args import output_path, subset

BUDGETS = {"forecast": ("RMSE", "relative", 0.03), "classify": ("accuracy", "points", 0.01),
           "lm": ("bits/char", "absolute", 0.03)}


def forecast(seed, precision):
    import grucy
    from grucy.demo import FORECAST_SETTINGS, sunspot_split
    years, values, train, test_idx = sunspot_split()
    L = FORECAST_SETTINGS["lookback"]
    model = grucy.Forecaster(random_state=seed, **FORECAST_SETTINGS,
                             precision="bf16" if precision == "bf16" else "fp32").fit(train)
    if precision == "int8":
        model = grucy.quantize(model, "int8")
    history = np.stack([values[i - L:i] for i in test_idx])
    pred = model.predict(history, horizon=1)[:, 0]
    return float(np.sqrt(np.mean((pred - values[test_idx]) ** 2)))


def classify(seed, precision):
    import grucy
    from grucy.demo import CLASSIFY_SETTINGS, HELD_OUT
    from grucy.datasets import load_digits_sequences
    X, y = load_digits_sequences()
    perm = np.random.default_rng(seed).permutation(len(X))
    n_test = int(round(HELD_OUT * len(perm)))
    test, train = perm[:n_test], perm[n_test:]
    model = grucy.GRUClassifier(random_state=seed, **CLASSIFY_SETTINGS,
                                precision="bf16" if precision == "bf16" else "fp32")
    model.fit(X[train], y[train])
    if precision == "int8":
        model = grucy.quantize(model, "int8")
    return float(model.score(X[test], y[test]))


def lm(seed, precision):
    import grucy
    from grucy.demo import LM_HELD_OUT, LM_SETTINGS, LM_TEXT_CHARS
    from grucy.datasets import load_stdlib_text
    text = load_stdlib_text(LM_TEXT_CHARS)
    n_test = int(len(text) * LM_HELD_OUT)
    train, test = text[:-n_test], text[-n_test:]
    model = grucy.CharLM(random_state=seed, **LM_SETTINGS,
                         precision="bf16" if precision == "bf16" else "fp32").fit(train)
    if precision == "int8":
        model = grucy.quantize(model, "int8")
    return float(model.bits_per_char(test))


DEMOS = {"forecast": forecast, "classify": classify, "lm": lm}


def within(demo, value, ref):
    metric, kind, budget = BUDGETS[demo]
    if kind == "relative":
        return value <= ref * (1 + budget), (value - ref) / ref
    if kind == "points":
        return value >= ref - budget, value - ref
    return value <= ref + budget, value - ref


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demos", type=subset(tuple(DEMOS), "--demos"), default=list(DEMOS),
                   metavar="LIST", help="comma-separated subset of " + ",".join(DEMOS)
                   + " (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=output_path(), default=None, metavar="PATH")
    args = p.parse_args(argv)
    rows = []
    for demo in args.demos:
        res = {}
        for precision in ("fp32", "bf16", "int8"):
            t0 = time.perf_counter()
            res[precision] = DEMOS[demo](args.seed, precision)
            print(f"{demo:9} {precision}: {BUDGETS[demo][0]} {res[precision]:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        row = {"demo": demo, "metric": BUDGETS[demo][0], **res}
        for precision in ("bf16", "int8"):
            ok, delta = within(demo, res[precision], res["fp32"])
            row[f"{precision}_delta"], row[f"{precision}_ok"] = delta, ok
        rows.append(row)
    print()
    print("| demo | metric | float32 | bf16 (trained and run) | int8 (float32-trained) | budget |")
    print("|:---|:---|---:|---:|---:|:---|")
    for r in rows:
        metric, kind, budget = BUDGETS[r["demo"]]
        fmt = (lambda d: f"{100 * d:+.1f}%") if kind == "relative" else \
            (lambda d: f"{100 * d:+.1f} pt") if kind == "points" else (lambda d: f"{d:+.3f}")
        btxt = {"relative": f"within {100 * budget:g}%", "points": f"within {100 * budget:g} "
                "point", "absolute": f"within {budget:g}"}[kind]
        print(f"| {r['demo']} | {metric} | {r['fp32']:.4f} | {r['bf16']:.4f} "
              f"({fmt(r['bf16_delta'])}{'' if r['bf16_ok'] else ', OVER'}) | "
              f"{r['int8']:.4f} ({fmt(r['int8_delta'])}{'' if r['int8_ok'] else ', OVER'}) | "
              f"{btxt} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["bf16_ok"] and r["int8_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
