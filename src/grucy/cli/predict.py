"""``grucy predict``: use a saved model.

What a model reads decides the options: the model says it through ``input_kind``
("series": a Forecaster, "text": a CharLM, "sequences": GRUClassifier and GRURegressor),
and :data:`_PREDICT` maps it to the function that refuses the other kinds' options and
prints the predictions.  A new model reading one of these kinds needs nothing here.
"""

from __future__ import annotations

from ._common import _COUNT, _SEED, CLIError, _number, _refuse
from ._data import HEADER_HELP, _read_column, _read_rows, _read_text

__all__ = ["add"]

_FORECASTER_OPTIONS = ("csv", "column", "missing", "header", "values", "horizon")
_GENERATE_OPTIONS = ("prompt", "n", "temperature", "seed")
_CHARLM_OPTIONS = _GENERATE_OPTIONS + ("text",)


def _run_predict(args):
    model = _load_model(args.model)
    name = type(model).__name__
    predict = _PREDICT.get(getattr(model, "input_kind", None))
    if predict is None:
        raise CLIError(f"{args.model} holds a {name}, which predict does not handle "
                       f"(it uses Forecaster, CharLM, GRUClassifier and GRURegressor "
                       f"files)")
    try:
        predict(args, model, name)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    return 0


def _load_model(path):
    """The model saved in ``path``; a checkpoint or another grucy object is a CLIError
    saying what the file is and what to do with it."""
    from .. import io
    from ..training import CHECKPOINT_KIND

    try:
        return io.load(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}") from None
    except io.FileFormatError as exc:
        try:
            kind, config, _ = io.read_archive(path)
        except (OSError, io.FileFormatError):
            raise CLIError(str(exc)) from None
        if kind != CHECKPOINT_KIND:
            raise CLIError(str(exc)) from None
        model = (config.get("metadata") or {}).get("model", "model")
        raise CLIError(f"{path} is a training checkpoint (of a {model} run), not a saved "
                       f"model: continue that run with 'grucy train <the same options> "
                       f"--resume {path}', and predict with the model it saves (-o)") \
            from None


def _predict_series(args, model, name):
    """A Forecaster: the next values after a history (--csv or --values)."""
    import numpy as np

    _refuse(args, _CHARLM_OPTIONS, f"to a {name} (they are CharLM options)")
    # what this command cannot give: the future covariates, several columns of history
    if model.n_covariates_:
        raise CLIError(f"this {name} was fitted with {model.n_covariates_} covariates, "
                       f"which it needs for the history and the steps ahead; grucy "
                       f"predict reads one column: use the Python API "
                       f"(model.predict(y, horizon, X=...))")
    if model.n_series_ > 1 or model.n_fitted_series_ is not None:
        what = (f"{model.n_series_} series at once" if model.n_series_ > 1
                else f"a list of {model.n_fitted_series_} series")
        raise CLIError(f"this {name} was fitted on {what}; grucy predict reads one "
                       f"column of one series: use the Python API (model.predict)")
    if args.values is not None and args.csv is not None:
        raise CLIError("give the history as --csv FILE or --values, not both")
    if args.values is not None:
        try:
            history = np.array([float(v) for v in args.values.split(",")])
        except ValueError:
            raise CLIError("--values must be comma-separated numbers") from None
    elif args.csv is not None:
        history = _read_column(args.csv, args.column, args.missing or "error",
                               args.header or "auto")
    else:
        raise CLIError("a Forecaster needs the history: --csv FILE [--column C] "
                       "or --values v1,v2,...")
    if len(history) < model.lookback_:  # (the model's own message says "y")
        source = "--values" if args.values is not None else f"--csv {args.csv}"
        raise CLIError(f"{source} holds {len(history)} values; this {name} reads the last "
                       f"lookback={model.lookback_} of the history")
    pred = model.predict(history, horizon=args.horizon or 1)
    for row in np.atleast_1d(pred):   # (repr: every digit; .6g printed 1.23454e+06)
        print(" ".join(repr(float(v)) for v in np.atleast_1d(row)))


def _predict_text(args, model, name):
    """A CharLM: generated text after --prompt, or the bits per character of --text."""
    _refuse(args, _FORECASTER_OPTIONS, f"to a {name} (give --prompt text or --text FILE)")
    if args.text is not None:
        _refuse(args, _GENERATE_OPTIONS, "with --text (it reports the bits per "
                                         "character of the file; they are for "
                                         "generating)")
        print(f"bits_per_char={model.bits_per_char(_read_text(args.text)):.6f}")
        return
    prompt = "\n" if args.prompt is None else args.prompt
    out = model.generate(prompt, 200 if args.n is None else args.n,
                         temperature=0.8 if args.temperature is None else args.temperature,
                         random_state=args.seed)
    print(prompt + out)


def _predict_sequences(args, model, name):
    """GRUClassifier, GRURegressor: one prediction per row of --csv."""
    import numpy as np

    _refuse(args, _CHARLM_OPTIONS + ("column", "missing", "values", "horizon"),
            f"to a {name} (it takes --csv FILE with one sequence per row)")
    if args.csv is None:
        raise CLIError(f"a {name} needs --csv FILE with one sequence per row")
    if getattr(model, "_input_ndim", 2) == 3 and model.n_features_in_ > 1:
        raise CLIError(f"this {name} reads {model.n_features_in_} features per step; grucy "
                       f"predict reads one value per step (a CSV row is one sequence): "
                       f"use the Python API (model.predict(X))")
    for v in model.predict(_read_rows(args.csv, args.header or "auto")):
        print(" ".join(str(x) for x in np.atleast_1d(v)))


_PREDICT = {"series": _predict_series, "text": _predict_text,
            "sequences": _predict_sequences}


def add(subparsers):
    p = subparsers.add_parser(
        "predict",
        help="use a saved model: forecast, generate text, or classify sequences",
        description="Load a model saved by 'grucy train' (or grucy.save) and use it. "
                    "Forecaster: the next --horizon values after the history in --csv "
                    "or --values, one line per step. CharLM: --prompt text continued by "
                    "-n characters, or --text FILE to print its bits per character. "
                    "GRUClassifier / GRURegressor: --csv FILE with one sequence per row; "
                    "one prediction per line. Options for another kind of model are "
                    "refused. A training checkpoint is not a model: resume it with "
                    "'grucy train ... --resume'.",
    )
    p.add_argument("model", help="a .grucy model file")
    p.add_argument("--csv", metavar="FILE", help="history column / sequences, one per row")
    p.add_argument("--column", metavar="NAME|INDEX", help="Forecaster: the CSV column")
    p.add_argument("--missing", choices=["error", "drop", "interpolate"],
                   help="Forecaster: empty or non-finite values in the column "
                        "(default: error)")
    p.add_argument("--header", choices=["auto", "yes", "no"], help=HEADER_HELP)
    p.add_argument("--values", metavar="V1,V2,...", help="Forecaster: the history inline")
    p.add_argument("--horizon", type=_COUNT, help="Forecaster: steps (default: 1)")
    p.add_argument("--prompt", help="CharLM: text to continue (default: a newline)")
    p.add_argument("-n", type=_COUNT, help="CharLM: characters (default: 200)")
    p.add_argument("--temperature", type=_number(0, None),
                   help="CharLM: >= 0, 0 always picks the likeliest (default: 0.8)")
    p.add_argument("--text", metavar="FILE", help="CharLM: report bits per character")
    p.add_argument("--seed", type=_SEED, help="CharLM: sampling seed")
    p.set_defaults(handler=_run_predict)
