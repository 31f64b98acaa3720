"""Fuzzing in CI (issue 15): ``grucy.load`` over structured mutations of real files with
valid checksums, ``grucy.interop.from_onnx`` over structured graph mutations; each case
in a forked child under a memory limit and a time limit (tests/fuzzing.py says what
fails a case).  Each fuzzer runs ``GRUCY_FUZZ_SECONDS`` seconds (60 by default);
``bench/fuzz.py`` runs them for an hour.
"""

from __future__ import annotations

import os
import sys

import pytest

from conftest import importorskip, requires

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux",
                                reason="the fuzzers fork children and read /proc (Linux)")

SECONDS = float(os.environ.get("GRUCY_FUZZ_SECONDS", "60"))


def _fuzz(name):
    importorskip("hypothesis")
    import fuzzing

    cases, failures = fuzzing.run(name, SECONDS)
    print(f"fuzz {name}: {cases} cases in {SECONDS:g} s, {len(failures)} failures")
    assert not failures, "\n\n".join(failures)
    assert cases >= 20, f"only {cases} cases ran in {SECONDS} s"


def test_fuzz_load():
    _fuzz("load")


@requires("onnx", why="the ONNX fuzzer mutates ONNX graphs")
def test_fuzz_from_onnx():
    _fuzz("onnx")
