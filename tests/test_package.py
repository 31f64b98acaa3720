"""The package as a user meets it: what ``import grucy`` makes reachable, what it does not
import, what a source tree without the compiled kernels says, and that nothing shipped
points at files outside the repository."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import grucy

SRC = Path(grucy.__file__).resolve().parent.parent
REPO = Path(__file__).resolve().parent.parent


def _python(code, *, path=SRC, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(path))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


def test_submodules_are_reachable_after_a_plain_import():
    proc = _python(
        "import sys, grucy\n"
        "eager = sorted(m for m in ('grucy.diagnostics', 'grucy.datasets', 'grucy.interop',"
        " 'grucy.demo', 'sklearn', 'torch', 'tqdm', 'matplotlib') if m in sys.modules)\n"
        "print('eager', eager)\n"
        "print(grucy.diagnostics.gradient_flow.__name__, grucy.datasets.load_sunspots()[0][0],"
        " grucy.interop.to_onnx.__name__, grucy.reference.GRU.__name__)\n"
        "print('listed', {'diagnostics', 'datasets', 'demo'} <= set(dir(grucy)))\n"
        "try:\n    grucy.no_such_thing\nexcept AttributeError as exc:\n    print(exc)\n"
        "print('never lazy', [n for n in ('torch', '_gru_rows', '__main__')"
        " if hasattr(grucy, n)], 'torch' in sys.modules)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "eager []",  # imported on first use only: import grucy stays quick
        "gradient_flow 1700 to_onnx GRU",
        "listed True",
        "module 'grucy' has no attribute 'no_such_thing'",
        "never lazy [] False",  # grucy.torch would import PyTorch; __main__ would run
    ]


def test_a_source_tree_without_the_compiled_kernels_says_what_to_do(tmp_path):
    tree = tmp_path / "src"
    shutil.copytree(Path(grucy.__file__).parent, tree / "grucy",
                    ignore=shutil.ignore_patterns("_gru*.so", "_gru*.pyd", "__pycache__"))
    # the pure-Python core imports (docs/architecture.md); the first use of the kernels
    # says what to do
    proc = _python("import grucy\ngrucy.GRU(2, 3)", path=tree, cwd=tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: grucy's compiled kernels (grucy._gru) are not "
                           "built in ")
    assert "pip install ." in last and "python setup.py build_ext --inplace" in last
    assert "circular import" not in last


def test_nothing_points_outside_the_repository():
    """The installed package (and the README and docs beside these tests) never send a
    reader to ../shared/DESIGN.md, which users do not get: docs/design.md is the page."""
    package = Path(grucy.__file__).resolve().parent
    files = [p for p in sorted(package.rglob("*")) if p.is_file()
             and p.suffix in (".py", ".pyx", ".pxd", ".h", ".md")]
    if (REPO / "README.md").is_file():
        files += [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
                  *sorted((REPO / "bench").glob("*.md"))]   # (bench/README.md: docs site)
        assert (REPO / "docs" / "design.md").is_file()
    assert any(p.name == "__init__.py" for p in files)
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text and "DESIGN.md" not in text, path
