"""Every Python example in README.md and docs/*.md runs as written, on its own.

Each fenced ``python`` block runs in a fresh interpreter in an empty folder, so it must
bring its own imports and may not lean on an earlier block.  A block that imports an
optional package (torch, onnxruntime, sklearn, ...; ``grucy.torch`` counts as torch) is
skipped with a reason naming it when that package is missing.  A block may declare more
needs on the line before its fence, ``<!-- needs: onnx onnxruntime -->``; a fragment that
cannot run at all would be marked ``<!-- not run: why -->`` (none is today).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import grucy

from conftest import PEERS, peer_missing, peer_reason

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK_TIMEOUT = 300  # seconds; the slowest block trains for a few seconds

FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
DIRECTIVE = re.compile(r"<!--\s*(needs|not run):\s*(.*?)\s*-->\s*$")
# grucy modules that import an optional package themselves
GRUCY_NEEDS = {"grucy.torch": "torch"}


class Block:
    def __init__(self, path, line, code, directive):
        self.path, self.line, self.code = path, line, code
        self.needs, self.not_run = set(), None
        if directive is not None:
            kind, value = directive.groups()
            if kind == "needs":
                self.needs.update(value.split())
            else:
                self.not_run = value
        try:
            tree = ast.parse(code)
        except SyntaxError:
            return  # reported by the test, which runs it
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     else [])
            for name in names:
                top = name.split(".")[0]
                if top in PEERS:
                    self.needs.add(top)
                if name in GRUCY_NEEDS:
                    self.needs.add(GRUCY_NEEDS[name])

    @property
    def id(self):
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks_of(path):
    text = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        found.append(Block(path, line, match.group(1), DIRECTIVE.search(before)))
    return found


BLOCKS = [b for path in DOCUMENTS if path.is_file() for b in blocks_of(path)]


def _env():
    env = dict(os.environ)
    # the grucy these tests import (a source tree or the installed package)
    here = str(Path(grucy.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    env.setdefault("KERAS_BACKEND", "torch")  # as the Keras example itself does
    # Two kernel threads crawl when another process holds the second core (a shared CI
    # machine); one thread gives the same numbers (results do not depend on the count).
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def test_the_examples_are_found():
    if not (REPO / "README.md").is_file():
        pytest.skip("README.md is not beside these tests (an installed test suite)")
    per_file = {}
    for b in BLOCKS:
        per_file[b.path.name] = per_file.get(b.path.name, 0) + 1
    # the README's layer, streaming, three models, PyTorch, Keras, ONNX; gradient flow
    assert per_file.get("README.md", 0) >= 8 and per_file.get("gradient_flow.md", 0) >= 1
    assert not [b.id for b in BLOCKS if b.not_run], "an example marked 'not run'"
    readme = {b.line: b.needs for b in BLOCKS if b.path.name == "README.md"}
    assert {"torch"} in readme.values() and {"keras"} in readme.values()
    assert {"onnx", "onnxruntime"} in readme.values() and {"sklearn"} in readme.values()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_example_runs_on_its_own(block, tmp_path):
    if block.not_run:
        pytest.skip(f"marked 'not run': {block.not_run}")
    missing = peer_missing(*sorted(block.needs))
    if missing:
        pytest.skip("; ".join(peer_reason(m, f"example at {block.id}") for m in missing))
    proc = subprocess.run([sys.executable, "-c", block.code], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    assert proc.returncode == 0, (
        f"the example at {block.id} failed:\n{block.code}\n--- stderr ---\n"
        f"{proc.stderr[-4000:]}")


def test_commands_in_the_docs_work_after_the_quick_start():
    """`PYTHONPATH=src python bench/x.py` needs an in-place build the Quick start does not
    make (and failed with a misleading circular import); after `pip install .`,
    `python bench/x.py` imports the installed grucy."""
    docs = [p for p in DOCUMENTS + [REPO / "bench" / "README.md"] if p.is_file()]
    if not docs:
        pytest.skip("README.md is not beside these tests (an installed test suite)")
    scripts = 0
    for path in docs:
        text = path.read_text(encoding="utf-8")
        assert "PYTHONPATH=src python" not in text, path
        for script in re.findall(r"python (bench/[\w.]+\.py)", text):
            assert (REPO / script).is_file(), (path, script)
            scripts += 1
    assert scripts >= 5
