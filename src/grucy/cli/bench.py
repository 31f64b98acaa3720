"""``grucy bench``: check this machine (the command of :mod:`grucy.bench`)."""

from __future__ import annotations

from ._common import CLIError

__all__ = ["add"]


def _run_bench(args):
    from .. import bench

    try:
        return bench.run(args)
    except bench.OptionError as exc:
        raise CLIError(str(exc)) from None


def add(subparsers):
    from ..bench import add_arguments

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
