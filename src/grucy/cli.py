"""Command line interface: ``grucy <command> [options]`` (also ``python -m grucy``).

Each command is one ``_add_<name>`` function that declares its sub-parser and sets
``handler`` to a function ``(args) -> exit status``; add it to ``_COMMANDS``.  Heavy
imports happen inside the handlers so that ``grucy --help`` stays instant.

Commands: ``demo`` (forecast | classify | lm), ``train``, ``predict``, ``bench`` (a
machine check, ``grucy.bench``), ``info``.

Every mistake is answered with one line on stderr, ``grucy <command>: error: ...``, never
a traceback: exit status 2 for bad arguments (argparse's own errors included: they are
one line too), 1 for a failure while running (a missing optional package, a diverged
run, an unexpected exception; ``GRUCY_TRACEBACK=1`` shows the traceback of the latter),
130 for Ctrl-C.  What can be checked before training (values, paths, options that do not
apply to the model) is checked before training.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import tempfile
from typing import List, Optional

from . import __version__

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """A user error: printed as ``grucy <command>: error: ...``, exit status 2."""

    status = 2


class CLIFailure(CLIError):
    """The command could not do its work (not a wrong argument): exit status 1."""

    status = 1


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line: ``grucy train: error: ... (see ...)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# -- argument types (argparse reports their errors as "argument --x: ...") ---------------
def _integer(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def _number(low=None, high=None, *, low_open=False, high_open=True):
    """A finite float in [low, high) (or (low, ...) with ``low_open``)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low}, "
                                             f"got {text}")
        if high is not None and (value > high or (high_open and value == high)):
            raise argparse.ArgumentTypeError(f"must be {'<' if high_open else '<='} "
                                             f"{high}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


_COUNT = _integer(1)  # epochs, sizes, steps: positive
_SEED = _integer(0)


def _given(args, names):
    """The options among ``names`` (dest names) that were given on the command line."""
    return ["--" + n.replace("_", "-") if len(n) > 1 else "-" + n
            for n in names if getattr(args, n) not in (None, False)]


def _refuse(args, names, why):
    given = _given(args, names)
    if given:
        raise CLIError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not "
                       f"apply {why}")


def _check_output(path, option):
    """Fail now, not after training, if ``path`` cannot be written: its directory must
    exist and take a new file, and ``path`` must not be a directory.  ``{epoch}`` in a
    checkpoint path stands for a number."""
    given = os.fspath(path)
    path = given.replace("{epoch}", "1")
    if os.path.isdir(path):
        raise CLIError(f"{option} {given} is a directory; give a file name, e.g. "
                       f"{os.path.join(given, 'model.grucy')}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(f"{option} {given}: the directory {directory} does not exist")
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise CLIError(f"{option} {given}: cannot write in {directory} "
                       f"({exc.strerror or exc})") from None


def _importable(name):
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is not one, a None module
        return False


# -- demo ----------------------------------------------------------------------------------
def _run_demo(args):
    if args.which != "forecast":
        _refuse(args, ("plot", "no_plot"), f"to the {args.which} demo (only forecast "
                                           f"draws a plot)")
    elif args.plot is not None and args.no_plot:
        raise CLIError("give --plot PATH or --no-plot, not both")
    if args.which == "classify":
        try:
            import sklearn.datasets  # noqa: F401
        except ImportError:
            raise CLIFailure("the classify demo needs scikit-learn, which ships the digits "
                             "data: pip install scikit-learn (or pip install "
                             "'grucy[sklearn]')") from None
    from . import demo

    verbose = not args.quiet
    if args.which == "forecast":
        plot = None if args.no_plot else (args.plot or demo.DEFAULT_PLOT)
        if plot is not None and _importable("matplotlib.figure"):  # else no plot is written
            try:
                _check_output(plot, "--plot")
            except CLIError as exc:
                if args.plot is None:  # the default, in the current directory
                    raise CLIError(f"{exc} (the default plot path; give --plot PATH or "
                                   f"--no-plot)") from None
                raise
        r = demo.run_forecast_demo(seed=args.seed, verbose=verbose, plot=plot)
        if args.quiet:
            line = (f"rmse_model={r['rmse_model']:.2f} "
                    f"rmse_ar{r['ar_order']}={r['rmse_ar']:.2f} "
                    f"rmse_persistence={r['rmse_persistence']:.2f}")
            if r["plot"]:
                line += f" plot={r['plot']}"
            print(line)
    elif args.which == "classify":
        r = demo.run_classify_demo(seed=args.seed, verbose=verbose)
        if args.quiet:
            print(f"accuracy={r['accuracy']:.4f} majority={r['majority_baseline']:.4f}")
    else:
        r = demo.run_lm_demo(seed=args.seed, verbose=verbose)
        if args.quiet:
            print(f"bpc_model={r['bpc_model']:.3f} bpc_bigram={r['bpc_bigram']:.3f}")
    return 0


def _add_demo(subparsers):
    p = subparsers.add_parser(
        "demo",
        help="train a model on real data and compare it with a baseline (seconds)",
        description="Train a GRU model on real data shipped with grucy and compare it "
                    "with a simple baseline. forecast (default): yearly sunspot numbers "
                    "1700-1978, one-year-ahead forecasts of 1979-2008 against "
                    "persistence and a least-squares AR(9); writes a PNG of forecast vs "
                    "truth when matplotlib is installed. classify: scikit-learn's digits "
                    "read row by row, 30% held out (needs scikit-learn). lm: a "
                    "character-level language model of Python standard-library source, "
                    "held-out bits per character against a character bigram model.",
    )
    p.add_argument("which", nargs="?", choices=["forecast", "classify", "lm"],
                   default="forecast", help="which demo (default: forecast)")
    p.add_argument("--seed", type=_SEED, default=0,
                   help="seed for initialisation and shuffling (default: 0)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print only the final numbers on one line")
    p.add_argument("--plot", metavar="PATH",
                   help="forecast demo: where to write the PNG (default: "
                        "./grucy-demo-forecast.png)")
    p.add_argument("--no-plot", action="store_true", help="forecast demo: write no plot")
    p.set_defaults(handler=_run_demo)


# -- reading data --------------------------------------------------------------------------
def _read_column(path, column, missing="error"):
    """One numeric column of a CSV file (by header name or 0-based index) as float64."""
    import numpy as np

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}") from None
    if not rows:
        raise CLIError(f"{path} is empty")
    header = rows[0]
    has_header = not _is_number(header[0]) if header else False
    if column is None:
        index = 0 if len(header) == 1 else len(header) - 1
    elif column.isdigit():
        index = int(column)
        if index >= len(header):
            raise CLIError(f"column {index} is out of range: {path} has {len(header)} "
                           f"column{'s' if len(header) != 1 else ''} (indices 0 to "
                           f"{len(header) - 1})")
    elif has_header and column in header:
        index = header.index(column)
    else:
        names = header if has_header else "(the file has no header)"
        raise CLIError(f"column {column!r} not found in {path}; columns: {names}")
    values = []
    for line, row in enumerate(rows[1 if has_header else 0:], start=2 if has_header else 1):
        field = row[index].strip() if index < len(row) else ""
        if field == "":
            values.append(float("nan"))
        elif _is_number(field):
            values.append(float(field))
        else:
            raise CLIError(f"{path}, line {line}: {field!r} in column {index} is not a number")
    series = np.array(values, dtype=np.float64)
    gaps = ~np.isfinite(series)
    if gaps.any():
        if missing == "error":
            first = int(np.argmax(gaps)) + (2 if has_header else 1)
            raise CLIError(f"{path}: column {index} has {int(gaps.sum())} missing or "
                           f"non-finite values (the first on line {first}); use "
                           f"--missing drop or --missing interpolate")
        if gaps.all():
            raise CLIError(f"{path}: no values in column {index}")
        if missing == "drop":
            series = series[~gaps]
        else:
            t = np.arange(len(series))
            series[gaps] = np.interp(t[gaps], t[~gaps], series[~gaps])
    if series.size == 0:
        raise CLIError(f"{path}: no values in column {index}")
    return series


def _read_rows(path):
    """A numeric CSV (optional header) as a 2-D float64 array: one sequence per row."""
    import numpy as np

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}") from None
    if rows and not all(_is_number(v) for v in rows[0]):
        rows = rows[1:]
    try:
        return np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise CLIError(f"{path}: every row must be numbers of the same length ({exc})") \
            from None


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path} is not UTF-8 text ({exc.reason})") from None


def _is_number(s):
    try:
        float(s)
    except ValueError:
        return False
    return True


# -- train ---------------------------------------------------------------------------------
_SERIES_OPTIONS = ("column", "missing", "lookback", "horizon")
_TEXT_OPTIONS = ("max_chars", "bptt", "embedding_dim")


def _run_train(args):
    from . import io
    from .distributed import get_communicator
    from .models import CharLM, Forecaster

    # Everything that can be wrong with the arguments is found before any training.
    if (args.csv is None) == (args.text is None):
        raise CLIError("give exactly one of --csv FILE (a series: Forecaster) or "
                       "--text FILE (a text: CharLM)")
    if args.csv is not None:
        _refuse(args, _TEXT_OPTIONS, "to a Forecaster (--csv); they are CharLM (--text) "
                                     "options")
    else:
        _refuse(args, _SERIES_OPTIONS, "to a CharLM (--text); they are Forecaster (--csv) "
                                       "options")
    if args.checkpoint is None:
        _refuse(args, ("checkpoint_every",), "without --checkpoint")
    if args.resume is not None and not os.path.isfile(args.resume):
        raise CLIError(f"--resume {args.resume}: no such file")
    # Under an MPI launcher every rank runs this command; only the root talks and saves.
    comm = get_communicator("auto" if args.distributed == "auto" else False)
    say = print if comm.is_root else (lambda *a, **k: None)
    if comm.is_root:
        _check_output(args.output, "--output")
        if args.checkpoint is not None:
            _check_output(args.checkpoint, "--checkpoint")
    common = dict(random_state=args.seed, dtype=args.dtype,
                  verbose=0 if args.quiet else 1)
    for name in ("epochs", "lr", "dropout", "patience", "schedule", "hidden_size",
                 "num_layers", "batch_size", "validation_fraction"):
        if getattr(args, name) is not None:
            common[name] = getattr(args, name)
    if args.csv is not None:
        data = _read_column(args.csv, args.column, args.missing or "error")
        model = Forecaster(lookback=args.lookback or 12, horizon=args.horizon or 1,
                           **common)
        what = f"{len(data)} values from {args.csv}"
    else:
        data = _read_text(args.text)
        if args.max_chars:
            data = data[:args.max_chars]
        extra = {k: getattr(args, k) for k in ("bptt", "embedding_dim")
                 if getattr(args, k) is not None}
        model = CharLM(**common, **extra)
        what = f"{len(data)} characters from {args.text}"
    if not args.quiet:
        say(f"Training {model!r} on {what}")
    try:
        model.fit(data, checkpoint=args.checkpoint,
                  checkpoint_every=args.checkpoint_every or 1, resume=args.resume,
                  distributed=comm)
    except (ValueError, TypeError, io.FileFormatError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from None
    except RuntimeError as exc:  # training diverged
        raise CLIFailure(str(exc)) from None
    if comm.is_root:
        io.save(model, args.output)
    last = {k: v[-1] for k, v in model.history_.items()}
    shown = "  ".join(f"{k} {v:.5g}" for k, v in last.items() if k != "lr")
    say(f"epochs {model.n_epochs_}  {shown}")
    say(f"saved {type(model).__name__} to {os.path.abspath(args.output)}")
    return 0


def _add_train(subparsers):
    p = subparsers.add_parser(
        "train",
        help="train a Forecaster on a CSV column or a CharLM on a text file; save it",
        description="Train a model and save it in grucy's file format. --csv FILE trains "
                    "a grucy.Forecaster on one column of a CSV file (a time series, "
                    "oldest first); --text FILE trains a grucy.CharLM on a UTF-8 text. "
                    "With --checkpoint the training state is written every "
                    "--checkpoint-every epochs; after a crash, run the same command "
                    "with --resume CHECKPOINT to continue exactly where it stopped. "
                    "Launched by mpirun -n N (mpi4py installed: pip install "
                    "'grucy[mpi]'), the N processes train data-parallel on one global "
                    "batch; rank 0 prints, writes the checkpoints and saves the model. "
                    "Options of the other model are refused, and the output paths are "
                    "checked before training starts.",
    )
    src = p.add_argument_group("input")
    src.add_argument("--csv", metavar="FILE", help="CSV file with the series")
    src.add_argument("--column", metavar="NAME|INDEX",
                     help="column name (header) or 0-based index (default: the last)")
    src.add_argument("--missing", choices=["error", "drop", "interpolate"],
                     help="what to do with empty or non-finite values (default: error)")
    src.add_argument("--text", metavar="FILE", help="UTF-8 text file for a CharLM")
    src.add_argument("--max-chars", type=_COUNT, metavar="N",
                     help="use only the first N characters of the text")
    p.add_argument("--output", "-o", required=True, metavar="PATH",
                   help="where to save the trained model (.grucy)")
    fc = p.add_argument_group("Forecaster")
    fc.add_argument("--lookback", type=_COUNT, help="steps read (default: 12)")
    fc.add_argument("--horizon", type=_COUNT, help="steps predicted (default: 1)")
    lm = p.add_argument_group("CharLM")
    lm.add_argument("--bptt", type=_COUNT, help="characters per BPTT chunk (default: 64)")
    lm.add_argument("--embedding-dim", type=_COUNT, help="embedding size (default: 32)")
    tr = p.add_argument_group("training")
    tr.add_argument("--epochs", type=_COUNT,
                    help="(model default: Forecaster 80, CharLM 4)")
    tr.add_argument("--hidden-size", type=_COUNT, help="GRU units (model default)")
    tr.add_argument("--num-layers", type=_COUNT, help="GRU layers (default: 1)")
    tr.add_argument("--batch-size", type=_COUNT, help="mini-batch size / text streams")
    tr.add_argument("--lr", type=_number(0, low_open=True, high=None),
                    help="learning rate (model default: 3e-3)")
    tr.add_argument("--dropout", type=_number(0, 1), help="in [0, 1) (default: 0)")
    tr.add_argument("--schedule", choices=["step", "cosine", "plateau"],
                    help="learning-rate schedule (default: constant)")
    tr.add_argument("--validation-fraction", type=_number(0, 1),
                    help="held-out share for validation, in [0, 1) (model default)")
    tr.add_argument("--patience", type=_COUNT,
                    help="early stopping patience (default: off)")
    tr.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    tr.add_argument("--seed", type=_SEED, default=0, help="(default: 0)")
    tr.add_argument("--checkpoint", metavar="PATH",
                    help="write checkpoints here ({epoch} in the name keeps one per epoch)")
    tr.add_argument("--checkpoint-every", type=_COUNT, metavar="N",
                    help="epochs between checkpoints (default: 1)")
    tr.add_argument("--resume", metavar="CHECKPOINT",
                    help="continue the run saved in this checkpoint")
    tr.add_argument("--distributed", choices=["auto", "off"], default="auto",
                    help="data-parallel training when started by an MPI launcher "
                         "(auto, the default) or never (off)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run_train)


# -- predict -------------------------------------------------------------------------------
_FORECASTER_OPTIONS = ("csv", "column", "missing", "values", "horizon")
_GENERATE_OPTIONS = ("prompt", "n", "temperature", "seed")
_CHARLM_OPTIONS = _GENERATE_OPTIONS + ("text",)


def _load_model(path):
    """The model saved in ``path``; a checkpoint or another grucy object is a CLIError
    saying what the file is and what to do with it."""
    from . import io
    from .training import CHECKPOINT_KIND

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


def _run_predict(args):
    import numpy as np

    from .models import CharLM, Forecaster, GRUClassifier, GRURegressor

    model = _load_model(args.model)
    name = type(model).__name__
    if isinstance(model, Forecaster):
        _refuse(args, _CHARLM_OPTIONS, f"to a {name} (they are CharLM options)")
    elif isinstance(model, CharLM):
        _refuse(args, _FORECASTER_OPTIONS, f"to a {name} (give --prompt text or --text "
                                           f"FILE)")
        if args.text is not None:
            _refuse(args, _GENERATE_OPTIONS, "with --text (it reports the bits per "
                                             "character of the file; they are for "
                                             "generating)")
    elif isinstance(model, (GRUClassifier, GRURegressor)):
        _refuse(args, _CHARLM_OPTIONS + ("column", "missing", "values", "horizon"),
                f"to a {name} (it takes --csv FILE with one sequence per row)")
    else:
        raise CLIError(f"{args.model} holds a {name}, which predict does not handle "
                       f"(it uses Forecaster, CharLM, GRUClassifier and GRURegressor "
                       f"files)")
    try:
        if isinstance(model, Forecaster):
            if args.values is not None and args.csv is not None:
                raise CLIError("give the history as --csv FILE or --values, not both")
            if args.values is not None:
                try:
                    history = np.array([float(v) for v in args.values.split(",")])
                except ValueError:
                    raise CLIError("--values must be comma-separated numbers") from None
            elif args.csv is not None:
                history = _read_column(args.csv, args.column, args.missing or "error")
            else:
                raise CLIError("a Forecaster needs the history: --csv FILE [--column C] "
                               "or --values v1,v2,...")
            pred = model.predict(history, horizon=args.horizon or 1)
            for row in np.atleast_1d(pred):
                print(" ".join(f"{v:.6g}" for v in np.atleast_1d(row)))
        elif isinstance(model, CharLM):
            if args.text is not None:
                print(f"bits_per_char={model.bits_per_char(_read_text(args.text)):.6f}")
            else:
                prompt = "\n" if args.prompt is None else args.prompt
                out = model.generate(prompt, 200 if args.n is None else args.n,
                                     temperature=(0.8 if args.temperature is None
                                                  else args.temperature),
                                     random_state=args.seed)
                print(prompt + out)
        else:
            if args.csv is None:
                raise CLIError(f"a {name} needs --csv FILE with one sequence per row")
            for v in model.predict(_read_rows(args.csv)):
                print(" ".join(str(x) for x in np.atleast_1d(v)))
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    return 0


def _add_predict(subparsers):
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
    p.add_argument("--values", metavar="V1,V2,...", help="Forecaster: the history inline")
    p.add_argument("--horizon", type=_COUNT, help="Forecaster: steps (default: 1)")
    p.add_argument("--prompt", help="CharLM: text to continue (default: a newline)")
    p.add_argument("-n", type=_COUNT, help="CharLM: characters (default: 200)")
    p.add_argument("--temperature", type=_number(0, None),
                   help="CharLM: >= 0, 0 always picks the likeliest (default: 0.8)")
    p.add_argument("--text", metavar="FILE", help="CharLM: report bits per character")
    p.add_argument("--seed", type=_SEED, help="CharLM: sampling seed")
    p.set_defaults(handler=_run_predict)


# -- bench ---------------------------------------------------------------------------------
def _run_bench(args):
    from . import bench

    try:
        return bench.run(args)
    except bench.OptionError as exc:
        raise CLIError(str(exc)) from None


def _add_bench(subparsers):
    from .bench import add_arguments

    p = subparsers.add_parser(
        "bench", help="check this machine: grucy vs its NumPy reference, FMA and SGEMM peaks",
        description="Time grucy.GRU against its NumPy reference (grucy.reference.GRU, same "
                    "weights, outputs checked) on a few shapes, measure the machine's "
                    "float32 FMA and SGEMM peaks at the same thread count, and show the "
                    "kernels in use.  Needs no other package.  The full benchmark against "
                    "PyTorch, ONNX Runtime and Keras is python bench/bench_gru.py in the "
                    "source repository.")
    add_arguments(p)
    p.set_defaults(handler=_run_bench)


# -- info ----------------------------------------------------------------------------------
OPTIONAL = ("scikit-learn", "tqdm", "matplotlib", "threadpoolctl", "mpi4py", "torch",
            "onnx", "onnxruntime", "keras")


def collect_info():
    """Versions, OpenMP and threads, and BLAS as a JSON-able dict."""
    from importlib import metadata

    import numpy as np
    import scipy

    from . import get_num_threads, openmp_enabled

    info = {
        "grucy": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "openmp": bool(openmp_enabled()),
        "threads": int(get_num_threads()),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                                           "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                if k in os.environ},
        "optional": {},
    }
    for name in OPTIONAL:
        try:
            info["optional"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["optional"][name] = None
    info["blas"] = _blas_info()
    info["kernels"] = _kernel_info()
    return info


def _kernel_info():
    """Which of grucy's kernels run on this CPU (``grucy._gru.kernel_info``)."""
    from . import _gru

    return dict(_gru.kernel_info())


_PACKED_NAMES = {"avx512": "grucy's packed AVX-512 kernel", "blas": "BLAS (no AVX-512)"}
_ROWS_NAMES = {"avx512": "AVX-512", "avx2": "AVX2", "baseline": "baseline x86-64 (SSE2)"}


def _blas_info():
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS, which grucy calls)

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        return [{"library": p.get("internal_api"), "version": p.get("version"),
                 "threads": p.get("num_threads"), "architecture": p.get("architecture"),
                 "user_api": p.get("user_api"), "path": p.get("filepath")}
                for p in threadpool_info()]
    try:
        import numpy as np

        deps = np.show_config(mode="dicts")["Build Dependencies"]
        blas = deps.get("blas", {})
        return [{"library": blas.get("name"), "version": blas.get("version"),
                 "threads": None, "source": "numpy build configuration"}]
    except Exception:  # pragma: no cover - very old or unusual numpy builds
        return []


def _run_info(args):
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"grucy {info['grucy']}  (Python {info['python']}, {info['platform']})")
    print(f"numpy {info['numpy']}, scipy {info['scipy']}")
    print(f"OpenMP: {'on' if info['openmp'] else 'off'}, {info['threads']} threads "
          f"(cpus: {info['cpus']})")
    for k, v in info["env"].items():
        print(f"  {k}={v}")
    k = info["kernels"]
    print("kernels on this CPU:")
    print(f"  products with the weights: {_PACKED_NAMES.get(k['packed'], k['packed'])}")
    print(f"  fused per-row passes:      {_ROWS_NAMES.get(k['rows'], k['rows'])}")
    print(f"  OpenBLAS core:             {k['blas_core'] or 'none (another BLAS)'}")
    held = (f"one thread ({k['blas_threads']})" if k["blas_threads"] != "none"
            else "not limited (scipy's BLAS offers no thread control)")
    print(f"  BLAS inside the kernels:   {held}")
    if "bf16" in k:
        print(f"  bf16 / int8 products:      {k['bf16']} / {k['int8']}")
    print("BLAS / thread pools:")
    for b in info["blas"]:
        extra = ", ".join(f"{k} {b[k]}" for k in ("version", "threads", "architecture")
                          if b.get(k) is not None)
        where = os.path.basename(b["path"]) if b.get("path") else b.get("source", "")
        print(f"  {b.get('library')} ({extra})  {where}")
    print("optional packages:")
    for name, version in info["optional"].items():
        print(f"  {name:<13} {version or 'not installed'}")
    return 0


def _add_info(subparsers):
    p = subparsers.add_parser(
        "info", help="versions, OpenMP, threads and BLAS of this installation",
        description="Print grucy's version, Python, numpy and scipy versions, whether "
                    "the kernels were built with OpenMP and how many threads they use, "
                    "which kernels run on this CPU (grucy's packed AVX-512 kernel or "
                    "BLAS for the products with the weights, the instruction set of the "
                    "fused per-row passes, OpenBLAS's own name of its kernel), "
                    "the BLAS libraries and their thread pools (through threadpoolctl "
                    "when installed, else numpy's build configuration), and which "
                    "optional packages are installed.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_run_info)


_COMMANDS = [_add_demo, _add_train, _add_predict, _add_bench, _add_info]


def build_parser():
    parser = _Parser(
        prog="grucy",
        description="grucy: fast GRU layers and models for CPUs (Cython + OpenMP over "
                    "scipy's BLAS).",
    )
    parser.add_argument("--version", action="version", version=f"grucy {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return its status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    where = f"grucy {args.command}"
    try:
        return args.handler(args)
    except CLIError as exc:
        print(f"{where}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (grucy predict ... | head): quietly, like other tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:  # a failure: one line, the traceback only on request
        if os.environ.get("GRUCY_TRACEBACK"):
            raise
        message = " ".join(str(exc).split()) or "(no message)"
        print(f"{where}: error: {type(exc).__name__}: {message} (GRUCY_TRACEBACK=1 "
              f"shows where)", file=sys.stderr)
        return 1
