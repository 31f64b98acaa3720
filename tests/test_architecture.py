"""The shape of the package (docs/architecture.md): what may import what, the pure-Python
core without the compiled kernels, no benchmark code in the installed package.

The import graph is read with ``ast`` from the installed package's own files (every
``import`` statement, at module level or inside a function), so these tests judge what
users get, not the source tree.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import grucy

PACKAGE = Path(grucy.__file__).resolve().parent
TESTS = Path(__file__).resolve().parent

# The layers of docs/architecture.md, bottom first.  A module may import modules of its
# own layer or of a layer below, never above, and never the package it sits in (its
# ``__init__``); a name ending in ".*" stands for a package and everything in it.
LAYERS = [
    ("leaves", ["grucy._gru", "grucy._version"]),
    ("checks", ["grucy._validation", "grucy._limits"]),
    ("format and parameters", ["grucy.io", "grucy._params"]),
    ("numerics", ["grucy._base", "grucy.losses", "grucy.optim", "grucy.distributed"]),
    ("layers and training", ["grucy.reference", "grucy.nn", "grucy.training.*"]),
    ("compiled layer", ["grucy.layer", "grucy._threads", "grucy.quantized"]),
    ("models and interop", ["grucy.models.*", "grucy.interop.*", "grucy.torch"]),
    ("tools", ["grucy.cli.*", "grucy.demo", "grucy.diagnostics", "grucy.bench",
               "grucy.baselines", "grucy.datasets", "grucy.__main__"]),
    ("the public names", ["grucy"]),
]
# What imports without the compiled kernels (the first five layers).
CORE_LAYERS = 5


def _module_names():
    """Dotted name -> path of every Python module of the installed package."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = _module_names()
KNOWN = set(MODULES) | {"grucy._gru"}  # the compiled kernels have no .py


def _layer(module):
    for rank, (_, members) in enumerate(LAYERS):
        for m in members:
            if module == m or (m.endswith(".*") and (module == m[:-2]
                                                     or module.startswith(m[:-1]))):
                return rank
    raise AssertionError(f"{module} is in no layer of LAYERS (docs/architecture.md)")


def _imports(module, path, tree=None):
    """(target module, ast node) for every import of a grucy module in ``path`` (parsed
    as ``tree`` when given)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if tree is None:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "grucy":
                    yield alias.name, node
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "grucy":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in KNOWN else target), node


def _graph():
    return {m: sorted({t for t, _ in _imports(m, p)} - {m}) for m, p in MODULES.items()}


def test_every_module_has_a_layer_and_every_import_a_target():
    graph = _graph()
    for module, targets in graph.items():
        _layer(module)
        for t in targets:
            assert t in KNOWN, f"{module} imports {t}, which is not a grucy module"


def test_no_import_goes_up():
    """Never a layer above, never the package a module is part of (its __init__)."""
    wrong = []
    for module, targets in _graph().items():
        for t in targets:
            if _layer(t) > _layer(module):
                wrong.append(f"{module} ({LAYERS[_layer(module)][0]}) imports {t} "
                             f"({LAYERS[_layer(t)][0]})")
            elif t != module and module.startswith(t + ".") and t in MODULES:
                wrong.append(f"{module} imports {t}, the package it is part of")
    assert not wrong, "\n".join(wrong)


def test_the_import_graph_has_no_circles():
    graph = _graph()
    state, path, circles = {}, [], []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for t in graph.get(m, ()):
            if state.get(t) == "open":
                circles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t)
        path.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not circles, "\n".join(circles)


def test_the_core_imports_the_kernels_only_where_it_can_do_without():
    """Below the compiled layer, ``grucy._gru`` is imported only inside a ``try`` that
    handles ImportError (a NumPy fallback follows)."""
    unguarded = []
    for module, path in MODULES.items():
        if _layer(module) >= CORE_LAYERS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError",
                                                                    "ModuleNotFoundError")
                    for h in node.handlers):
                guarded.update(id(n) for stmt in node.body for n in ast.walk(stmt))
        for target, node in _imports(module, path, tree):
            if target == "grucy._gru" and id(node) not in guarded:
                unguarded.append(f"{module}, line {node.lineno}")
    assert not unguarded, unguarded


def test_the_installed_package_holds_no_benchmark_code():
    """The peer benchmark and the profiler live in bench/, outside the package; the
    package's ``grucy bench`` is the small machine check that needs no peer."""
    names = [p.name for p in PACKAGE.rglob("*") if p.is_file()]
    assert not [n for n in names if n.startswith(("benchmark", "_bench", "bench_"))]
    peers = {"torch", "onnx", "onnxruntime", "keras", "tensorflow", "matplotlib"}
    bench = MODULES["grucy.bench"]
    imported = {a.name.split(".")[0] for node in ast.walk(ast.parse(bench.read_text()))
                if isinstance(node, ast.Import) for a in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(bench.read_text()))
                 if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    assert not imported & peers
    assert len(bench.read_text().splitlines()) < 400


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


def test_the_pure_python_core_imports_and_works_without_the_kernels(tmp_path):
    proc = _run_blocked(f"""
        import numpy as np
        import grucy
        from grucy import _params, _validation, distributed, io, losses, nn, optim
        from grucy import reference, training

        ref = reference.GRU(3, 4, num_layers=2, bidirectional=True, seed=0)
        y, h_n = ref.forward(np.ones((5, 2, 3)), lengths=[5, 3])
        dx, dh0 = ref.backward(np.ones_like(y), np.ones_like(h_n))
        ref.forward(np.ones((5, 2, 3)))
        dx, dh0 = ref.backward(dh_n=np.ones_like(h_n))  # only the final state flows back
        path = {str(tmp_path / 'ref.grucy')!r}
        grucy.save(ref, path)
        assert type(grucy.load(path)) is reference.GRU
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
