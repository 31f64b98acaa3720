"""``grucy train``: a Forecaster on a CSV column or a CharLM on a text, saved."""

from __future__ import annotations

import os

from ._common import _COUNT, _SEED, CLIError, CLIFailure, _check_output, _number, _refuse
from ._data import HEADER_HELP, _read_column, _read_text

__all__ = ["add"]


_SERIES_OPTIONS = ("column", "missing", "header", "lookback", "horizon")
_TEXT_OPTIONS = ("max_chars", "bptt", "embedding_dim")


def _check_distinct(args):
    """The model and the checkpoint never overwrite the input or each other (the same
    path twice is a typo that would lose the data)."""
    source = ("--csv", args.csv) if args.csv is not None else ("--text", args.text)
    paths = [source, ("--output", args.output)]
    if args.checkpoint is not None:
        paths.append(("--checkpoint", args.checkpoint.replace("{epoch}", "1")))
    for i, (a, pa) in enumerate(paths):
        for b, pb in paths[i + 1:]:
            if _same_file(pa, pb):
                raise CLIError(f"{b} {pb} is the same file as {a} {pa}; give another path")


def _same_file(a, b):
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.abspath(a) == os.path.abspath(b)


def _run_train(args):
    from .. import io
    from ..distributed import get_communicator
    from ..models import CharLM, Forecaster

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
        _check_distinct(args)
    common = dict(random_state=args.seed, dtype=args.dtype,
                  verbose=0 if args.quiet else 1)
    for name in ("epochs", "lr", "dropout", "patience", "schedule", "hidden_size",
                 "num_layers", "batch_size", "validation_fraction"):
        if getattr(args, name) is not None:
            common[name] = getattr(args, name)
    if args.csv is not None:
        data = _read_column(args.csv, args.column, args.missing or "error",
                            args.header or "auto")
        model = Forecaster(lookback=args.lookback or 12, horizon=args.horizon or 1,
                           **common)
        need = model.lookback + model.horizon
        if len(data) < need:  # (before "Training ...", and naming the options)
            raise CLIError(f"--csv {args.csv} holds {len(data)} values; --lookback "
                           f"{model.lookback} and --horizon {model.horizon} need at least "
                           f"{need}")
        what = f"{len(data)} values from {args.csv}"
    else:
        data = _read_text(args.text)
        if args.max_chars:
            data = data[:args.max_chars]
        if len(data) < 2:  # (before "Training ...")
            raise CLIError(f"--text {args.text} holds {len(data)} characters; a CharLM "
                           f"needs at least 2 to learn from")
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


def add(subparsers):
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
    src.add_argument("--header", choices=["auto", "yes", "no"], help=HEADER_HELP)
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
