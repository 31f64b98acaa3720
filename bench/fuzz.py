#!/usr/bin/env python
"""The fuzzers of tests/test_fuzz.py, run for longer: ``grucy.load`` over structured
mutations of real grucy files (valid checksums) and ``grucy.interop.from_onnx`` over
structured graph mutations, each case in a forked child under a memory limit and a
time limit (``tests/fuzzing.py`` says what fails a case).  Reports the cases tried and
the failures (each with hypothesis's shrunk example), and exits with status 1 when any
case failed.

    PYTHONPATH=src python bench/fuzz.py                   # each fuzzer for an hour
    PYTHONPATH=src python bench/fuzz.py --seconds 60      # a minute each
    PYTHONPATH=src python bench/fuzz.py --fuzzer onnx --seconds 600

Needs hypothesis (the test extra) and, for the ONNX fuzzer, onnx (``grucy[onnx]``; the
fuzzer is reported as skipped without it).  Linux only (fork, ``/proc``, RLIMIT_AS).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

from _bench_args import nonnegative_float, positive_float

TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzzer", choices=("load", "onnx", "all"), default="all")
    parser.add_argument("--seconds", type=positive_float, default=3600.0,
                        help="seconds per fuzzer (default 3600)")
    parser.add_argument("--every", type=nonnegative_float, default=60.0,
                        help="seconds between progress lines (default 60)")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("hypothesis") is None:
        parser.error("needs hypothesis (pip install 'grucy[test]')")
    sys.path.insert(0, TESTS)
    import fuzzing

    names = ["load", "onnx"] if args.fuzzer == "all" else [args.fuzzer]
    results = {}
    for name in names:
        if name == "onnx" and importlib.util.find_spec("onnx") is None:
            print(f"{name}: skipped (needs onnx: pip install 'grucy[onnx]')", flush=True)
            continue
        last = [time.monotonic()]

        def progress(cases, failures, elapsed, name=name):
            if time.monotonic() - last[0] >= args.every:
                last[0] = time.monotonic()
                print(f"{name}: {elapsed:7.0f} s  {cases} cases  {failures} failures",
                      flush=True)

        start = time.monotonic()
        cases, failures = fuzzing.run(name, args.seconds, stop_at_first=False,
                                      progress=progress)
        elapsed = time.monotonic() - start
        results[name] = (cases, failures, elapsed)
        print(f"{name}: {cases} cases in {elapsed:.0f} s ({cases / elapsed:.1f}/s), "
              f"{len(failures)} failures", flush=True)
        for failure in failures:
            print(f"--- {name} failure\n{failure}\n", flush=True)
    print("summary: " + "; ".join(f"{n} {c} cases, {len(f)} failures"
                                  for n, (c, f, _) in results.items()))
    return 1 if any(f for _, f, _ in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
