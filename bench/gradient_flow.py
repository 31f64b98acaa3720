"""How far back does the gradient reach?  grucy.diagnostics.gradient_flow on real data.

Trains a grucy.Forecaster on the weekly Mauna Loa CO2 series (1958-1995; the 59 missing
weeks linearly interpolated) to predict the next week from the last two years, then
measures ||dLoss/dh_t|| for each of the 400 weeks before a forecast in 1996, for the
trained model and for the same network before training.  Prints a summary and writes a
PNG (not committed; see docs/gradient_flow.md).

    PYTHONPATH=src python bench/gradient_flow.py [--out bench/results/gradient_flow.png]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import grucy
from grucy.datasets import load_co2
from grucy.diagnostics import gradient_flow

from _bench_args import output_path

STEPS = 400
LOOKBACK = 104
SETTINGS = dict(lookback=LOOKBACK, hidden_size=32, epochs=30, lr=3e-3, random_state=0)


def co2_series():
    dates, values = load_co2()
    gaps = np.isnan(values)
    t = np.arange(len(values))
    values = values.copy()
    values[gaps] = np.interp(t[gaps], t[~gaps], values[~gaps])
    return dates, values


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=output_path(),
                        default=os.path.join("bench", "results", "gradient_flow.png"),
                        help="the PNG to write (default: bench/results/gradient_flow.png)")
    args = parser.parse_args(argv)
    dates, values = co2_series()
    train_end = int(np.searchsorted(dates, np.datetime64("1996-01-01")))
    train = values[:train_end]
    start = time.perf_counter()
    trained = grucy.Forecaster(**SETTINGS).fit(train)
    print(f"trained {trained!r} in {time.perf_counter() - start:.1f} s; final loss "
          f"{trained.history_['loss'][-1]:.2e} (scaled MSE)")
    # the same initial weights, never updated (learning rate 0)
    untrained = grucy.Forecaster(**{**SETTINGS, "epochs": 1, "lr": 0.0}).fit(train)

    end = train_end + 20
    history, target = values[end - STEPS:end], values[end:end + 1]
    curves = {}
    for name, model in (("trained GRU", trained), ("untrained GRU", untrained)):
        start = time.perf_counter()
        flow = gradient_flow(model, history, target)
        curves[name] = flow
        back = flow[::-1]  # back[k] = gradient k steps before the forecast
        print(f"{name}: {time.perf_counter() - start:.2f} s; ||dL/dh|| at the last step "
              f"{back[0]:.3e}, 52 weeks back {back[52]:.3e} (x{back[52] / back[0]:.2g}), "
              f"104 back {back[104]:.3e} (x{back[104] / back[0]:.2g}), {STEPS - 1} back "
              f"{back[-1]:.3e} (x{back[-1] / back[0]:.2g})")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: no plot")
        return 0
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.subplots()
    steps_back = np.arange(STEPS)
    for name, flow in curves.items():
        ax.semilogy(steps_back, flow[::-1], label=name)
    ax.axvline(LOOKBACK, color="0.4", ls=":", lw=1, label=f"training window ({LOOKBACK} weeks)")
    ax.set_xlabel("weeks before the forecast (t = T - k)")
    ax.set_ylabel("||dLoss / dh_t||")
    ax.set_title(f"Gradient flow through a GRU over {STEPS} weeks of Mauna Loa CO2")
    ax.legend()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"plot written to {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
