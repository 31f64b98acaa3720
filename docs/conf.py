"""Sphinx configuration of grucy's documentation site.

Build from the repository root, with grucy installed (or its kernels built in place and
``PYTHONPATH=src``) and the docs extra (``pip install ".[docs]"``)::

    python -m sphinx -W -b html docs build/docs       # the site; warnings are errors
    python -m sphinx -W -b doctest docs build/doctest # runs every >>> example

The tutorial's figures and tables are computed during the build (``co2_regimes.py``
beside this file trains a GRU and an RNN on the CO2 series, about 30 s).
"""

from __future__ import annotations

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)                       # co2_regimes, bench_tables
sys.path.insert(0, os.path.join(HERE, "_ext"))  # the measured-table directive

import grucy  # noqa: E402

project = "grucy"
author = "the grucy developers"
copyright = "2026, the grucy developers"
release = version = grucy.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "myst_parser",
    "matplotlib.sphinxext.plot_directive",
    "grucy_measured",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
default_role = "literal"  # `x` is code, as in the Markdown pages
highlight_language = "none"  # the equations' literal blocks are not Python

# -- API reference: autodoc + numpydoc --------------------------------------------------
autodoc_default_options = {"members": True, "member-order": "bysource",
                           "show-inheritance": True}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autoclass_content = "class"
numpydoc_show_class_members = False   # autodoc lists the members
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set = set()

intersphinx_mapping: dict = {}  # offline builds: no inventories fetched
# grucy.torch subclasses torch.nn.Module: without PyTorch its page is built from a mock
if importlib.util.find_spec("torch") is None:
    autodoc_mock_imports = ["torch"]

# -- examples: doctest and the plot directive ----------------------------------------------
doctest_global_setup = "import numpy as np\nimport grucy\n"
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.max_open_warning": 0}
plot_working_directory = HERE

# -- MyST (the Markdown pages: design, architecture, gradient flow) ---------------------
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

# -- HTML -------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"grucy {release}"
html_static_path: list = []
html_theme_options = {
    "description": "Fast GRU layers for CPUs, in your NumPy/SciPy pipeline",
    "fixed_sidebar": True,
    "page_width": "1180px",
    "sidebar_width": "230px",
}
