"""How the CO2 demo's settings were chosen, and does ``Forecaster(ar_order=...)`` help?
(README, Forecasting)

Settings are chosen on validation periods, never on the held-out weeks: every config
trains on the first 48% of the weeks and forecasts 52 weeks ahead from every 4th week up
to 64%, then trains on 64% and forecasts up to 80% (the demo's training span); then the
demo's own split (train 80%, forecast the rest) scores them on the held-out weeks.
AR(59) (order by BIC on the demo's training weeks) and AR(104) are fitted on the same
training spans.  Three seeds each; about three minutes on 2 cores:
``python docs/co2_ar_order.py``
"""

import numpy as np

from grucy import Forecaster, demo
from grucy.baselines import ar_forecast, fit_ar

H, STRIDE, SEEDS = 52, demo.CO2_STRIDE, (0, 1, 2)
CONFIGS = {"GRU alone (the demo)": {},
           "GRU alone, constant lr": dict(schedule=None),
           "ar_order=104, epochs=40, lr=1e-3": dict(ar_order=104, epochs=40, lr=1e-3)}


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def scores(values, cov, fit_end, test_end):
    """{name: [RMSE per seed]} of every config and the two AR baselines."""
    out = {}
    for name, change in CONFIGS.items():
        out[name] = []
        for seed in SEEDS:
            m = Forecaster(random_state=seed, **{**demo.CO2_SETTINGS, **change})
            m.fit(values[:fit_end], cov[:fit_end])
            bt = m.backtest(values[:test_end], cov[:test_end], start=fit_end, horizon=H,
                            stride=STRIDE, coverage=None)
            out[name].append(rmse(bt["forecast"], bt["actual"]))
    for order in (59, 104):
        hist = np.stack([values[o - order:o] for o in bt["origins"]])
        out[f"AR({order})"] = [rmse(ar_forecast(*fit_ar(values[:fit_end], order), hist, H),
                                    bt["actual"])]
    return out


def main():
    dates, values, cov, n_train = demo.co2_split()
    for title, fit_end, test_end in [("validation (train 48%, forecast to 64%)",
                                      int(0.6 * n_train), int(0.8 * n_train)),
                                     ("validation (train 64%, forecast to 80%)",
                                      int(0.8 * n_train), n_train),
                                     ("held out (train 80%, forecast the rest)",
                                      n_train, len(values))]:
        print(f"{title}: RMSE (ppm) of 52-week forecasts, seeds {SEEDS}")
        for name, r in scores(values, cov, fit_end, test_end).items():
            print(f"  {name:<36s} mean {np.mean(r):.3f}  {[round(v, 3) for v in r]}")


if __name__ == "__main__":
    main()
