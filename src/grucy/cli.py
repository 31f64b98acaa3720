"""Command line interface: ``grucy <command> [options]`` (also ``python -m grucy``).

Each command is one ``_add_<name>`` function that declares its sub-parser and sets
``handler`` to a function ``(args) -> exit status``; add it to ``_COMMANDS``.  Heavy
imports happen inside the handlers so that ``grucy --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__

__all__ = ["main", "build_parser"]


def _run_demo(args):
    from .demo import run_demo

    result = run_demo(seed=args.seed, verbose=not args.quiet)
    if args.quiet:
        print(f"rmse_model={result['rmse_model']:.2f} "
              f"rmse_ar{result['ar_order']}={result['rmse_ar']:.2f} "
              f"rmse_persistence={result['rmse_persistence']:.2f}")
    return 0


def _add_demo(subparsers):
    p = subparsers.add_parser(
        "demo",
        help="train a GRU forecaster on yearly sunspot numbers (takes seconds)",
        description="Train a one-layer GRU + linear readout on yearly sunspot numbers "
                    "1700-1978, forecast 1979-2008 one year ahead, and compare the "
                    "held-out RMSE with persistence and a least-squares AR(9) model.",
    )
    p.add_argument("--seed", type=int, default=0,
                   help="seed for initialisation and shuffling (default: 0)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print only the final RMSEs on one line")
    p.set_defaults(handler=_run_demo)


_COMMANDS = [_add_demo]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="grucy",
        description="grucy: fast GRU layers for CPUs (Cython + OpenMP over scipy's BLAS).",
    )
    parser.add_argument("--version", action="version", version=f"grucy {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(subparsers)
    return parser


def main(argv=None):
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return its status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return args.handler(args)
