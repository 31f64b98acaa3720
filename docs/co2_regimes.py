"""The tutorial's experiment: a GRU and a plain RNN trained on the weekly Mauna Loa CO2
series, their gates, the three regimes and how far back their gradients reach.

Both read the last two years (104 weeks) to predict the next week, trained on 1958-1995
(the 59 missing weeks linearly interpolated) with the same settings: the GRU is a
``grucy.Forecaster(lookback=104, hidden_size=32, epochs=30, lr=3e-3, random_state=0)``
(as in ``bench/gradient_flow.py``), the RNN the same network with
:class:`grucy.reference.RNN` in place of the GRU, trained by the same rules (Adam,
mini-batches of 32, gradient norm clipped at 1).  Then both read the 400 weeks before a
forecast in 1996 and :mod:`grucy.diagnostics` measures them.

Run it from the repository (after the Quick start) to print the numbers and write the
figures::

    python docs/co2_regimes.py [--out DIR]

The documentation build imports it: the tutorial's figures and its table of regime
fractions come from :func:`results`, computed once per build (about 30 s on 2 cores).
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import numpy as np

import grucy
from grucy.datasets import load_co2
from grucy.diagnostics import gates, regimes, state_jacobian
from grucy.nn import Linear
from grucy.optim import Adam, clip_grad_norm
from grucy.reference import RNN

LOOKBACK = 104          # weeks the networks read
HIDDEN = 32
EPOCHS = 30
LR = 3e-3
STEPS = 400             # weeks read before the analysed forecast
NEAR = 0.1              # how near 0 or 1 a gate is, for the strict regimes
REGIME_COLORS = {"carry": "tab:blue", "reset": "tab:red", "rnn": "tab:green",
                 "mixed": "0.6"}


def co2_series():
    """Weekly CO2 (ppm) with the missing weeks interpolated, and the dates."""
    dates, values = load_co2()
    gaps = np.isnan(values)
    t = np.arange(len(values))
    values = values.copy()
    values[gaps] = np.interp(t[gaps], t[~gaps], values[~gaps])
    return dates, values


def _windows(scaled):
    idx = np.arange(len(scaled) - LOOKBACK)[:, None]
    return scaled[idx + np.arange(LOOKBACK)][..., None], scaled[idx[:, 0] + LOOKBACK, None]


def train_rnn(train, seed=0):
    """The RNN forecaster: RNN(1, 32) -> Linear(32, 1) on standardised values.

    Returns ``(rnn, head, mean, scale)``.
    """
    mean, scale = train.mean(), train.std()
    X, Y = _windows((train - mean) / scale)
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    rng = np.random.default_rng(seed)
    rnn = RNN(1, HIDDEN, batch_first=True, seed=int(rng.integers(2**31)))
    head = Linear(HIDDEN, 1, seed=int(rng.integers(2**31)))
    params = rnn.parameters() + head.parameters()
    grads = list(rnn.grads.values()) + list(head.grads.values())
    opt = Adam(params, grads, lr=LR)
    for _ in range(EPOCHS):
        order = rng.permutation(len(X))
        for start in range(0, len(X), 32):
            batch = order[start:start + 32]
            rnn.zero_grad()
            head.zero_grad()
            _, h_n = rnn.forward(X[batch])
            out = head.forward(h_n[-1])
            dout = 2 * (out - Y[batch]) / out.size          # mean squared error
            rnn.backward(None, head.backward(dout)[None])
            clip_grad_norm(grads, 1.0)
            opt.step()
    return rnn, head, mean, scale


@functools.lru_cache(maxsize=1)
def results():
    """Train both networks and measure them; cached (the docs build asks several times).

    Returns a dict: ``weeks`` (the analysed dates), ``history`` (ppm), ``gates`` (the
    GRU's :class:`~grucy.diagnostics.Gates`, (1, 400, 32)), ``regimes``
    (:class:`~grucy.diagnostics.Regimes`), ``gru``/``rnn``/``untrained``
    (:class:`~grucy.diagnostics.StateJacobian` of the trained GRU, the trained RNN and
    the GRU before training), ``fit_s`` (training seconds, GRU and RNN).
    """
    dates, values = co2_series()
    train_end = int(np.searchsorted(dates, np.datetime64("1996-01-01")))
    train = values[:train_end]
    settings = dict(lookback=LOOKBACK, hidden_size=HIDDEN, epochs=EPOCHS, lr=LR,
                    random_state=0)
    start = time.perf_counter()
    gru = grucy.Forecaster(**settings).fit(train)
    gru_s = time.perf_counter() - start
    untrained = grucy.Forecaster(**{**settings, "epochs": 1, "lr": 0.0}).fit(train)
    start = time.perf_counter()
    rnn, _, mean, scale = train_rnn(train)
    rnn_s = time.perf_counter() - start

    end = train_end + 20                       # a forecast of the 20th week of 1996
    history = values[end - STEPS:end]
    g = gates(gru, history)[0][0]
    scaled = ((history - mean) / scale)[None, :, None]
    return {
        "weeks": dates[end - STEPS:end], "history": history, "gates": g,
        "regimes": regimes(g, near=NEAR),
        "gru": state_jacobian(gru, history)[0],
        "untrained": state_jacobian(untrained, history)[0],
        "rnn": state_jacobian(rnn, scaled)[0],
        "fit_s": (gru_s, rnn_s),
    }


# -- what the tutorial shows ---------------------------------------------------------------
def regime_rows():
    """The rows of the tutorial's table: regime, strict fraction, nearest fraction,
    units, and the mean over those units of the gradient left 104 and 399 steps back."""
    res = results()
    reg, unit = res["regimes"], res["gru"].unit_norm[0]   # (T, H)
    rows = []
    for name in ("carry", "reset", "rnn", "mixed"):
        members = reg.units == name
        if name == "mixed":
            rows.append((name, reg.fractions[name], None, None, None, None))
            continue
        back = [float(unit[-1 - k, members].mean()) if members.any() else None
                for k in (LOOKBACK, STEPS - 1)]
        rows.append((name, reg.fractions[name], reg.nearest[name],
                     int(members.sum()), *back))
    return rows


def comparison_rows():
    """||dh_T/dh_t|| k steps back for the trained GRU, the untrained GRU and the RNN."""
    res = results()
    return [(k, *(float(res[m].product_norm[0, -1 - k]) for m in ("gru", "untrained",
                                                                    "rnn")))
            for k in (1, 10, 52, LOOKBACK, 200, STEPS - 1)]


def plot_gates(fig=None):
    """The GRU's update and reset gates over the last 200 weeks, units sorted by their
    mean z, under the CO2 series it reads."""
    from matplotlib.figure import Figure

    res = results()
    g, reg = res["gates"], res["regimes"]
    fig = fig or Figure(figsize=(9, 6.5), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True, height_ratios=[1, 2, 2])
    weeks = np.arange(-STEPS, 0)[-200:]
    axes[0].plot(weeks, res["history"][-200:], color="k", lw=1)
    axes[0].set_ylabel("CO2 (ppm)")
    axes[0].set_title("What the trained GRU reads, and its gates, week by week")
    order = np.argsort(reg.mean_z)
    for ax, name in zip(axes[1:], ("z", "r")):
        values = getattr(g, name)[0, -200:, order]          # (units, weeks)
        im = ax.imshow(values, aspect="auto", origin="lower", vmin=0, vmax=1,
                       cmap="viridis", interpolation="nearest",
                       extent=(weeks[0] - 0.5, weeks[-1] + 0.5, -0.5, HIDDEN - 0.5))
        ax.set_ylabel(f"unit (by mean z)\n{'update gate z' if name == 'z' else 'reset gate r'}")
        fig.colorbar(im, ax=ax, shrink=0.9)
    axes[-1].set_xlabel("weeks before the forecast")
    return fig


def plot_regimes(fig=None):
    """Each unit's mean (z, r) in the square of the three regimes, and the fractions."""
    from matplotlib.figure import Figure

    res = results()
    reg = res["regimes"]
    fig = fig or Figure(figsize=(9, 4.2), layout="constrained")
    ax, bars = fig.subplots(1, 2, width_ratios=[1, 1.3])
    ax.add_patch(_rect((1 - NEAR, 0), NEAR, 1, "carry"))
    ax.add_patch(_rect((0, 0), NEAR, NEAR, "reset"))
    ax.add_patch(_rect((0, 1 - NEAR), NEAR, NEAR, "rnn"))
    for name in ("carry", "reset", "rnn"):
        members = reg.units == name
        ax.scatter(reg.mean_z[members], reg.mean_r[members], color=REGIME_COLORS[name],
                   label=f"{name}: {members.sum()} units", edgecolor="k", lw=0.5, zorder=3)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("mean update gate z")
    ax.set_ylabel("mean reset gate r")
    ax.set_title("Units by their nearest regime")
    ax.legend(loc="lower center", fontsize=8)
    names = ["carry", "reset", "rnn", "mixed"]
    x = np.arange(len(names))
    strict = [reg.fractions[n] for n in names]
    nearest = [reg.nearest.get(n, 0.0) for n in names]
    b1 = bars.bar(x - 0.2, strict, 0.4, label=f"within {NEAR} of the corner",
                  color=[REGIME_COLORS[n] for n in names])
    b2 = bars.bar(x + 0.2, nearest, 0.4, label="nearest regime", color="none",
                  edgecolor=[REGIME_COLORS[n] for n in names], hatch="//")
    bars.bar_label(b1, labels=[f"{v:.1%}" for v in strict], fontsize=8)
    bars.bar_label(b2, labels=[f"{v:.1%}" if i < 3 else "" for i, v in
                               enumerate(nearest)], fontsize=8)
    bars.set_xticks(x, ["carry\nz≈1", "reset\nz≈0, r≈0", "rnn\nz≈0, r≈1", "mixed"])
    bars.set_ylabel("fraction of unit-steps")
    bars.set_ylim(0, 1.1)
    bars.set_title(f"{STEPS} weeks x {HIDDEN} units")
    bars.legend(fontsize=8)
    return fig


def _rect(xy, w, h, name):
    from matplotlib.patches import Rectangle

    return Rectangle(xy, w, h, color=REGIME_COLORS[name], alpha=0.15, lw=0)


def plot_gradients(fig=None):
    """||dh_T/dh_t|| over 400 weeks: trained GRU, untrained GRU, trained RNN; and the
    GRU's per-unit share by regime."""
    from matplotlib.figure import Figure

    res = results()
    fig = fig or Figure(figsize=(9, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    back = np.arange(STEPS)
    for key, label, style in (("gru", "trained GRU", "-"), ("rnn", "trained RNN", "-"),
                              ("untrained", "untrained GRU", ":")):
        left.semilogy(back, res[key].product_norm[0, ::-1], style, label=label)
    left.axvline(LOOKBACK, color="0.4", ls="--", lw=0.8)
    left.set_xlabel("weeks back (T - t)")
    left.set_ylabel("||dh_T / dh_t||  (spectral norm)")
    left.set_title("Gradient through time, GRU vs RNN")
    left.legend(fontsize=8)
    unit, reg = res["gru"].unit_norm[0, ::-1], res["regimes"]
    for name in ("carry", "reset", "rnn"):
        members = reg.units == name
        if members.any():
            right.semilogy(back, unit[:, members].mean(axis=1),
                           color=REGIME_COLORS[name],
                           label=f"GRU units: {name} ({members.sum()})")
    right.semilogy(back, res["rnn"].unit_norm[0, ::-1].mean(axis=1), color="k", ls="--",
                   label=f"RNN units ({HIDDEN})")
    right.axvline(LOOKBACK, color="0.4", ls="--", lw=0.8)
    right.set_xlabel("weeks back (T - t)")
    right.set_title("Gradient reaching each unit, by regime")
    right.legend(fontsize=8)
    low = min(res[k].product_norm.min() for k in ("gru", "rnn"))
    left.set_ylim(max(low, 1e-30) / 10, 10)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder to write the three figures to (PNG)")
    args = parser.parse_args(argv)
    res = results()
    print(f"trained in {res['fit_s'][0]:.1f} s (GRU) and {res['fit_s'][1]:.1f} s (RNN)")
    print(f"regimes of the trained GRU's {HIDDEN} units over {STEPS} weeks:")
    print("regime  within-0.1  nearest  units  unit gradient 104 back  399 back")
    for name, strict, nearest, units, b104, b399 in regime_rows():
        if nearest is None:
            print(f"{name:7s} {strict:10.1%}")
        else:
            print(f"{name:7s} {strict:10.1%} {nearest:8.1%} {units:6d}  "
                  f"{_fmt(b104):>22s} {_fmt(b399):>9s}")
    print("||dh_T/dh_t|| k weeks back:  trained GRU  untrained GRU  trained RNN")
    for k, g, u, r in comparison_rows():
        print(f"{k:27d}  {g:11.2e}  {u:13.2e}  {r:11.2e}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for name, plot in (("gates", plot_gates), ("regimes", plot_regimes),
                           ("gradients", plot_gradients)):
            path = os.path.join(args.out, f"co2_{name}.png")
            plot().savefig(path, dpi=110)
            print(f"wrote {path}")
    return 0


def _fmt(value):
    return "-" if value is None else f"{value:.2e}"


if __name__ == "__main__":
    raise SystemExit(main())
