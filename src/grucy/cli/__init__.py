"""Command line interface: ``grucy <command> [options]`` (also ``python -m grucy``).

Each command is one module of this package whose ``add(subparsers)`` declares its
sub-parser and sets ``handler`` to a function ``(args) -> exit status``; add it to
``_COMMANDS``.  What they share (errors, argument types, path checks) is ``_common.py``,
reading input files ``_data.py``.  Heavy imports happen inside the handlers so that
``grucy --help`` stays instant.

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

import os
import sys
from typing import List, Optional

from .._version import __version__
from . import bench, demo, info, predict, train
from ._common import CLIError, _Parser

__all__ = ["main", "build_parser"]

_COMMANDS = [demo.add, train.add, predict.add, bench.add, info.add]


def build_parser():
    parser = _Parser(
        prog="grucy",
        description="grucy: fast GRU layers and models for CPUs (Cython kernels on "
                    "grucy's own GEMM and thread team).",
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
        return _failed(exc.status)
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return _failed(130)
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
        return _failed(1)


def _failed(status):
    """``status``, after ending the whole MPI job when this is one of its ranks: an
    error on one rank (a path only it checks, a file only it cannot read) otherwise
    left it in MPI's shutdown and the others in their next collective, for ever."""
    from ..distributed import abort_running_job

    abort_running_job(status)
    return status
