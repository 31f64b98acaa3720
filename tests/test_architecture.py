"""The shape of the package (docs/architecture.md): the pure-Python core without the
compiled kernels.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import grucy

PACKAGE = Path(grucy.__file__).resolve().parent
TESTS = Path(__file__).resolve().parent


# Refuses grucy._gru as an import hook would for a module that is not there.
_BLOCK_KERNELS = """
import importlib.abc, sys

class RefuseKernels(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "grucy._gru":
            raise ModuleNotFoundError(f"{name} is refused by the test", name=name)

sys.meta_path.insert(0, RefuseKernels())
"""


def _run_blocked(code, timeout=300):
    return subprocess.run([sys.executable, "-c", _BLOCK_KERNELS + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout,
                          cwd=TESTS.parent)


def test_the_pure_python_core_imports_and_works_without_the_kernels():
    proc = _run_blocked(f"""
        import numpy as np
        import grucy
        from grucy import _params, _validation, distributed, io, losses, nn, optim
        from grucy import reference, training

        ref = reference.GRU(3, 4, num_layers=2, bidirectional=True, seed=0)
        y, h_n = ref.forward(np.ones((5, 2, 3)), lengths=[5, 3])
        dx, dh0 = ref.backward(np.ones_like(y), np.ones_like(h_n))
        net = nn.Sequential(nn.Linear(3, 2, seed=0))
        X, Y = np.ones((8, 3), np.float32), np.zeros((8, 2), np.float32)
        task = training.ArrayTask(net, X, Y, losses.mse_loss, np.arange(8))
        training.train(task, epochs=2, batch_size=4, seed=0, optimizer="sgd")
        assert "grucy._gru" not in sys.modules and "grucy.layer" not in sys.modules
        for use in ("grucy.GRU", "grucy.Forecaster", "grucy.set_num_threads"):
            try:
                eval(use)
            except ImportError as exc:
                print(use, str(exc).startswith("grucy's compiled kernels (grucy._gru) "
                                               "are not built in "))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "grucy.GRU True", "grucy.Forecaster True", "grucy.set_num_threads True"]


def test_the_reference_tests_pass_without_the_kernels():
    """test_reference.py (the reference against finite differences, PyTorch and scalar
    loops) runs as it is with grucy._gru refused: the oracle of the kernels does not
    lean on them."""
    proc = _run_blocked(f"""
        import pytest
        status = pytest.main([{str(TESTS / 'test_reference.py')!r}, "-q", "-x",
                              "-p", "no:cacheprovider"])
        assert "grucy._gru" not in sys.modules, "the reference tests loaded the kernels"
        sys.exit(int(status))
    """, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout
