"""``grucy demo``: train a model on real data shipped with grucy, against a baseline."""

from __future__ import annotations

from ._common import _SEED, CLIError, CLIFailure, _check_output, _importable, _refuse

__all__ = ["add"]


_PLOTS = ("forecast", "co2")


def _plot_path(args, default):
    """The plot to write (None: none), checked before any training starts."""
    plot = None if args.no_plot else (args.plot or default)
    if plot is not None and _importable("matplotlib.figure"):  # else no plot is written
        try:
            _check_output(plot, "--plot")
        except CLIError as exc:
            if args.plot is None:  # the default, in the current directory
                raise CLIError(f"{exc} (the default plot path; give --plot PATH or "
                               f"--no-plot)") from None
            raise
    return plot


def _run_demo(args):
    if args.which not in _PLOTS:
        _refuse(args, ("plot", "no_plot"), f"to the {args.which} demo (only forecast "
                                           f"and co2 draw a plot)")
    elif args.plot is not None and args.no_plot:
        raise CLIError("give --plot PATH or --no-plot, not both")
    if args.which == "classify":
        try:
            import sklearn.datasets  # noqa: F401
        except ImportError:
            raise CLIFailure("the classify demo needs scikit-learn, which ships the digits "
                             "data: pip install scikit-learn (or pip install "
                             "'grucy[sklearn]')") from None
    from .. import demo

    verbose = not args.quiet
    if args.which == "forecast":
        plot = _plot_path(args, demo.DEFAULT_PLOT)
        r = demo.run_forecast_demo(seed=args.seed, verbose=verbose, plot=plot)
        if args.quiet:
            line = (f"rmse_model={r['rmse_model']:.2f} "
                    f"rmse_ar{r['ar_order']}={r['rmse_ar']:.2f} "
                    f"rmse_seasonal_naive={r['rmse_seasonal_naive']:.2f} "
                    f"rmse_persistence={r['rmse_persistence']:.2f}")
            if r["coverage"] is not None:
                line += f" coverage80={r['coverage']:.3f}"
            if r["plot"]:
                line += f" plot={r['plot']}"
            print(line)
    elif args.which == "co2":
        plot = _plot_path(args, demo.DEFAULT_CO2_PLOT)
        r = demo.run_co2_demo(seed=args.seed, verbose=verbose, plot=plot)
        if args.quiet:
            line = (f"rmse_model={r['rmse_model']:.3f} "
                    f"rmse_ar{r['ar_order']}={r['rmse_ar']:.3f} "
                    f"rmse_ar{r['ar_lookback']}={r['rmse_ar_lookback']:.3f} "
                    f"rmse_seasonal_naive={r['rmse_seasonal_naive']:.3f} "
                    f"coverage80={r['coverage']:.3f}")
            if r["plot"]:
                line += f" plot={r['plot']}"
            print(line)
    elif args.which == "lines":
        r = demo.run_lines_demo(seed=args.seed, verbose=verbose)
        if args.quiet:
            print(f"accuracy={r['accuracy']:.4f} naive_bayes={r['naive_bayes']:.4f} "
                  f"majority={r['majority_baseline']:.4f}")
    elif args.which == "classify":
        r = demo.run_classify_demo(seed=args.seed, verbose=verbose)
        if args.quiet:
            print(f"accuracy={r['accuracy']:.4f} majority={r['majority_baseline']:.4f}")
    else:
        r = demo.run_lm_demo(seed=args.seed, verbose=verbose)
        if args.quiet:
            print(f"bpc_model={r['bpc_model']:.3f} bpc_bigram={r['bpc_bigram']:.3f}")
    return 0


def add(subparsers):
    p = subparsers.add_parser(
        "demo",
        help="train a model on real data and compare it with a baseline (seconds)",
        description="Train a GRU model on real data shipped with grucy and compare it "
                    "with a simple baseline. forecast (default): yearly sunspot numbers "
                    "1700-1978, one-year-ahead median forecasts and 80% intervals of "
                    "1979-2008 against persistence, the seasonal naive and a "
                    "least-squares AR(9); writes a PNG of the forecasts and their band "
                    "when matplotlib is installed. co2: weekly Mauna Loa CO2 with "
                    "calendar covariates, 52-week forecasts and 80% intervals from every "
                    "4th week of the last 20% (a backtest) against the seasonal naive and "
                    "AR baselines (plot too). lines: lines of Python standard-library "
                    "source, read character by character (variable lengths), classified "
                    "by statement kind against a character n-gram naive Bayes. classify: "
                    "scikit-learn's digits "
                    "read row by row, 30% held out (needs scikit-learn). lm: a "
                    "character-level language model of Python standard-library source, "
                    "held-out bits per character against a character bigram model.",
    )
    p.add_argument("which", nargs="?",
                   choices=["forecast", "co2", "lines", "classify", "lm"],
                   default="forecast", help="which demo (default: forecast)")
    p.add_argument("--seed", type=_SEED, default=0,
                   help="seed for initialisation and shuffling (default: 0)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print only the final numbers on one line")
    p.add_argument("--plot", metavar="PATH",
                   help="forecast and co2 demos: where to write the PNG (default: "
                        "./grucy-demo-forecast.png, ./grucy-demo-co2.png)")
    p.add_argument("--no-plot", action="store_true",
                   help="forecast and co2 demos: write no plot")
    p.set_defaults(handler=_run_demo)
