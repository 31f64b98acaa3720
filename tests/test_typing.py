"""Types: the package type-checks, a user's script passes ``mypy --strict``, the stub of
the compiled module declares what the module defines, and ``grucy.load`` can say what it
returns."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import grucy

from conftest import peer_missing

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve().parent / "typing" / "user_script.py"
PACKAGE = Path(grucy.__file__).resolve().parent


def test_load_returns_the_class_asked_for(tmp_path):
    gru = grucy.GRU(2, 3, seed=0)
    path = tmp_path / "gru.grucy"
    grucy.save(gru, path)
    assert type(grucy.load(path, grucy.GRU)) is grucy.GRU
    assert type(grucy.load(path, grucy.GRUBase)) is grucy.GRU  # a base class is fine
    with pytest.raises(grucy.FileFormatError, match="not a grucy.reference.GRU"):
        from grucy.reference import GRU as ReferenceGRU
        grucy.load(path, ReferenceGRU)
    with pytest.raises(TypeError, match="cls must be a class"):
        grucy.load(path, "grucy.GRU")


def test_stub_declares_every_name_of_the_compiled_module():
    from grucy import _gru

    stub = ast.parse((PACKAGE / "_gru.pyi").read_text(encoding="utf-8"))
    declared = {n.name for n in stub.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    declared |= {n.target.id for n in stub.body
                 if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    defined = {name for name, value in vars(_gru).items()
               if (callable(value) or name.isupper())
               and (not name.startswith("_") or name == "_buffer")  # (what layer.py uses)
               and getattr(value, "__module__", "grucy._gru") == "grucy._gru"
               and not inspect.ismodule(value) and name not in ("np", "os")}
    assert defined - declared == set(), "declare these in _gru.pyi"
    methods = {n.name for n in next(n for n in stub.body if isinstance(n, ast.ClassDef)
                                    and n.name == "GRUStream").body
               if isinstance(n, ast.FunctionDef)}
    public = {m for m in dir(_gru.GRUStream) if not m.startswith("__")}
    assert public - methods - {"num_layers", "batch_size", "hidden_size", "input_size"} \
        == {"_pack", "_take_snapshot"}


def test_the_package_ships_its_types():
    assert (PACKAGE / "py.typed").is_file() and (PACKAGE / "_gru.pyi").is_file()
    pyproject = REPO / "pyproject.toml"
    if pyproject.is_file():
        assert '"*.pyi"' in pyproject.read_text(encoding="utf-8")


def test_the_user_script_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _mypy(*args, cwd):
    env = dict(os.environ)
    if "site-packages" not in str(PACKAGE):  # a source tree: show mypy where it is
        env["MYPYPATH"] = str(PACKAGE.parent)
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(bool(peer_missing("mypy")),
                    reason="needs mypy (pip install 'grucy[typing]'), not installed")
def test_mypy_strict_on_a_user_script_and_mypy_on_the_package():
    config = REPO / "pyproject.toml"
    if not config.is_file():
        pytest.skip("pyproject.toml is not beside these tests (an installed test suite)")
    proc = _mypy("--strict", "--follow-imports=silent", str(SCRIPT), cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-4000:]
    if (REPO / "src" / "grucy").is_dir():
        proc = _mypy("--config-file", str(config), cwd=REPO)  # files = src/grucy
        assert proc.returncode == 0, proc.stdout[-4000:]
