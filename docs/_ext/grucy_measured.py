"""``.. measured:: NAME``: a table of numbers measured while the documentation builds.

The tutorial's tables of regime fractions and gradient norms are not typed in: the
directive asks ``co2_regimes`` (beside conf.py) for them, so the page always shows what
this build measured, the same run that drew its figures.
"""

from __future__ import annotations

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective


def _percent(value):
    return "" if value is None else f"{value:.1%}"


def _sci(value):
    return "" if value is None else f"{value:.1e}"


def _tables():
    import co2_regimes as co2

    regimes = (["regime", f"unit-steps within {co2.NEAR} of it", "unit-steps nearest to it",
                "units (by most of their steps)",
                f"gradient reaching those units {co2.LOOKBACK} weeks back",
                f"{co2.STEPS - 1} weeks back"],
               [[name, _percent(strict), _percent(nearest),
                 "" if units is None else str(units), _sci(b1), _sci(b2)]
                for name, strict, nearest, units, b1, b2 in co2.regime_rows()])
    comparison = (["weeks back", "trained GRU", "untrained GRU", "trained RNN"],
                  [[str(k), _sci(g), _sci(u), _sci(r)]
                   for k, g, u, r in co2.comparison_rows()])
    return {"regimes": regimes, "comparison": comparison}


class Measured(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self):
        tables = _tables()
        name = self.arguments[0]
        if name not in tables:
            raise self.error(f"measured: unknown table {name!r}; known: {sorted(tables)}")
        header, rows = tables[name]
        lines = [".. list-table::", "   :header-rows: 1", ""]
        for row in [header] + rows:
            lines.append(f"   * - {row[0]}")
            lines += [f"     - {cell}" for cell in row[1:]]
        container = nodes.container(classes=["measured"])
        self.state.nested_parse(StringList(lines, source=f"<measured {name}>"),
                                self.content_offset, container)
        return [container]


def _skip_examples_needing_torch(app, doctree):
    """Docstring examples of grucy.torch need PyTorch: without it they are shown but not
    run (the doctest builder tests only doctest blocks)."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        return
    for block in list(doctree.findall(nodes.doctest_block)):
        source = block.source or (block.parent.source if block.parent else "") or ""
        if "import torch" in block.astext() or "grucy/torch.py" in source.replace("\\", "/"):
            block.replace_self(nodes.literal_block(block.rawsource, block.astext()))


def _aliases():
    """NumPy's ArrayLike and DTypeLike as Sphinx spells them out (long unions)."""
    from numpy.typing import ArrayLike, DTypeLike
    from sphinx.util.typing import stringify_annotation

    return [(stringify_annotation(alias, mode), name)
            for alias, name in ((ArrayLike, "ArrayLike"), (DTypeLike, "DTypeLike"))
            for mode in ("smart", "fully-qualified-except-typing")]


def _signature(app, what, name, obj, options, signature, return_annotation):
    """Signatures as a reader wants them: ``ArrayLike`` rather than its expansion, and
    for a class whose base defines ``__new__(cls, *args, **kwargs)`` (grucy's parameter
    holders) its ``__init__``'s parameters rather than ``(*args, **kwargs)``."""
    import inspect

    if what == "class" and signature == "(*args, **kwargs)" and \
            obj.__init__ is not object.__init__:
        from sphinx.util.inspect import stringify_signature

        sig = inspect.signature(obj.__init__)
        sig = sig.replace(parameters=list(sig.parameters.values())[1:],
                          return_annotation=inspect.Signature.empty)
        signature = stringify_signature(sig, unqualified_typehints=True)
    if signature is None:
        return None
    for long, short in _aliases():
        signature = signature.replace(long, short)
    return signature, return_annotation


def setup(app):
    app.add_directive("measured", Measured)
    app.connect("autodoc-process-signature", _signature)
    app.connect("doctree-read", _skip_examples_needing_torch)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
