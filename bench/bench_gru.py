#!/usr/bin/env python
"""Benchmark grucy against PyTorch, ONNX Runtime, the NumPy baseline and Keras.

A thin wrapper over :func:`grucy.benchmark.main` (also available as ``grucy bench`` and
``python -m grucy.benchmark``) that writes its results under bench/results/ of this
checkout, wherever it is run from.  Run from the repository root::

    python bench/bench_gru.py            # full run, about 5-10 minutes on 2 cores
    python bench/bench_gru.py --quick    # smoke run, about a minute
    python bench/bench_gru.py --profile  # where a training step's time goes

See bench/README.md for the options and how to read the output.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    try:
        from grucy.benchmark import main as bench_main
    except ImportError as exc:
        sys.exit(f"bench_gru: cannot import grucy.benchmark ({exc}); install the package "
                 f"(pip install -e . --no-build-isolation) or run with PYTHONPATH=src")
    return bench_main(argv, prog="python bench/bench_gru.py",
                      json_default=os.path.join(HERE, "results", "bench_gru.json"))


if __name__ == "__main__":
    sys.exit(main())
