"""The documentation site (docs/, built by Sphinx in CI) covers what users copy and every
public name.

Sphinx itself is optional (the docs extra); these tests need only the standard library:
the ``>>>`` examples of the reStructuredText pages run here too (the Markdown pages'
examples run in test_docs.py), and the API page names every public module.
"""

from __future__ import annotations

import doctest
import os
import pkgutil
import re
from pathlib import Path

import pytest

import grucy

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.rst")) + sorted(DOCS.glob("guide/*.rst"))

pytestmark = pytest.mark.skipif(not (DOCS / "conf.py").is_file(),
                                reason="docs/ is not beside these tests (an installed "
                                       "test suite)")


@pytest.mark.parametrize("page", [p for p in PAGES if ">>>" in p.read_text("utf-8")],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_examples_of_the_page_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testfile(str(page), module_relative=False, verbose=False,
                              globs={}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} example(s) of {page.name} failed"
    assert result.attempted > 0


def _public_modules():
    names = set()
    for info in pkgutil.iter_modules(grucy.__path__):
        if not info.name.startswith("_") and info.name not in ("layer",):
            names.add(f"grucy.{info.name}")
    return names


def test_the_api_page_lists_every_public_module_and_name():
    api = (DOCS / "api.rst").read_text("utf-8")
    documented = set(re.findall(r"^\.\. automodule:: (grucy[\w.]*)", api, re.M))
    assert "grucy" in documented  # every name of grucy.__all__, through automodule
    # grucy.layer is grucy.GRU, documented under grucy
    assert _public_modules() - documented == set()
    assert ".. autoclass:: grucy._gru.GRUStream" in api
    for page in ("tutorial", "api", "benchmarks", "guide/layer", "guide/forecaster",
                 "guide/sequence", "guide/charlm", "design", "architecture",
                 "gradient_flow"):
        assert page in (DOCS / "index.rst").read_text("utf-8"), page


def test_the_site_builds_its_figures_from_this_repository():
    tutorial = (DOCS / "tutorial.rst").read_text("utf-8")
    for what in ("plot_gates", "plot_regimes", "plot_gradients", ".. measured:: regimes",
                 ".. measured:: comparison"):
        assert what in tutorial, what
    assert os.path.isfile(DOCS / "co2_regimes.py") and os.path.isfile(DOCS / "screenshot.py")
