"""Real data for the demos and tests, all available offline.

- :func:`load_sunspots`, :func:`load_co2`: small real time series shipped with grucy
  (public domain, copied unchanged from statsmodels; see README.md in this directory for
  provenance), read through :mod:`importlib.resources`, so they load from a source tree,
  an installed wheel or a zip alike.
- :func:`load_digits_sequences`: scikit-learn's 8x8 digits read row by row, 8-step
  sequences of 8 features (needs scikit-learn, which ships the data).
- :func:`load_stdlib_text`: a text corpus from the Python standard library's own source
  files, for the character-level language model.
- :func:`load_stdlib_lines`: single lines of that source labelled by the kind of
  statement they hold (variable-length sequences to classify).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import sys
from importlib import resources

from typing import Sequence, Tuple

import numpy as np

__all__ = ["load_sunspots", "load_co2", "calendar_features", "load_digits_sequences",
           "load_stdlib_text", "load_stdlib_lines", "LINE_KINDS", "STDLIB_MODULES"]


def _rows(filename):
    """Header and data rows of one shipped CSV file."""
    text = resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    return header, [row for row in reader if row]


def load_sunspots() -> Tuple[np.ndarray, np.ndarray]:
    """Yearly mean sunspot number, 1700-2008 (309 years).

    Returns ``(years, values)``: ``years`` int64 (1700, 1701, ...), ``values`` float64.
    """
    header, rows = _rows("sunspots.csv")
    if header != ["YEAR", "SUNACTIVITY"]:  # pragma: no cover - guards the shipped file
        raise RuntimeError(f"unexpected header in sunspots.csv: {header}")
    years = np.array([int(float(r[0])) for r in rows], dtype=np.int64)
    values = np.array([float(r[1]) for r in rows], dtype=np.float64)
    return years, values


def load_co2(fill: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Weekly atmospheric CO2 (ppm) at Mauna Loa, 1958-03-29 to 2001-12-29 (2284 weeks).

    Returns ``(dates, values)``: ``dates`` datetime64[D], ``values`` float64 with NaN for
    the 59 weeks that have no measurement, or with ``fill=True`` those weeks linearly
    interpolated between their neighbours.
    """
    header, rows = _rows("co2.csv")
    if header != ["date", "co2"]:  # pragma: no cover - guards the shipped file
        raise RuntimeError(f"unexpected header in co2.csv: {header}")
    dates = np.array([f"{r[0][:4]}-{r[0][4:6]}-{r[0][6:8]}" for r in rows],
                     dtype="datetime64[D]")
    values = np.array([float(r[1]) if len(r) > 1 and r[1].strip() else np.nan
                       for r in rows], dtype=np.float64)
    if fill:
        t = np.arange(len(values))
        known = ~np.isnan(values)
        values = np.interp(t, t[known], values[known])
    return dates, values


def _wall_clock(dates):
    """``dates`` with every timezone-aware timestamp replaced by its local (wall-clock)
    time.  NumPy's datetime64 has no timezone: it would convert such a timestamp to UTC,
    and 2021-01-01 02:00 in Tokyo would get the features of December 31."""
    accessor = getattr(dates, "dt", None)  # a pandas Series of datetimes
    if getattr(accessor, "tz", None) is not None:
        return accessor.tz_localize(None)
    if getattr(dates, "tz", None) is not None and hasattr(dates, "tz_localize"):
        return dates.tz_localize(None)  # a pandas DatetimeIndex or Timestamp
    arr = np.asarray(dates)
    if arr.dtype == object:  # datetime or Timestamp objects, each maybe with its own zone
        arr = np.array([v.replace(tzinfo=None) if getattr(v, "tzinfo", None) is not None
                        else v for v in arr.ravel()], dtype=object).reshape(arr.shape)
    return arr


def calendar_features(dates, harmonics: int = 2, period_days: float = 365.25) -> np.ndarray:
    """Calendar covariates of ``dates`` (datetime64 or anything NumPy reads as dates):
    ``sin`` and ``cos`` of ``2 pi k t`` for k = 1..``harmonics``, t the fraction of the
    year (of ``period_days``) gone by.  Known in advance for any date: the covariates a
    :class:`grucy.Forecaster` reads for the seasons.  Returns (n, 2 * harmonics).

    ``dates`` is 1-D (n dates) or a single date; a missing date (NaT) is refused.
    Timezone-aware timestamps (pandas, :class:`datetime.datetime`) count by their local
    calendar date, the one their wall clock shows (NumPy itself converts them to UTC;
    strings with a UTC offset are still converted so, by NumPy)."""
    from .._validation import _positive_int, _real

    harmonics = _positive_int("harmonics", harmonics)
    period_days = _real("period_days", period_days)
    if period_days <= 0:
        raise ValueError(f"period_days must be a positive finite number (the length of "
                         f"the cycle in days), got {period_days}")
    d = np.asarray(_wall_clock(dates), dtype="datetime64[D]")
    if d.ndim > 1:  # column_stack would interleave the rows' features
        raise ValueError(f"dates must be 1-D (one date per row) or a single date, got "
                         f"shape {d.shape}")
    missing = np.isnat(d)
    if missing.any():
        # NaT minus its year is NaT, which as a float is -9.2e18: finite made-up features
        first = int(np.flatnonzero(missing)[0]) if d.ndim else 0
        raise ValueError(f"dates contains NaT, a missing date (first at index {first}); "
                         f"calendar features need every date")
    days = (d - d.astype("datetime64[Y]")).astype(np.float64)
    phase = 2 * np.pi * days / period_days
    return np.column_stack([f(k * phase) for k in range(1, harmonics + 1)
                            for f in (np.sin, np.cos)])


def load_digits_sequences() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits as sequences: each 8x8 image read row by row.

    Returns ``(X, y)``: ``X`` float64 (1797, 8, 8), steps = image rows, features = the
    row's 8 pixels scaled to [0, 1] (the raw values are 0..16); ``y`` int64 labels 0..9.
    The data (UCI ML hand-written digits, test set of Alpaydin & Kaynak) ships with
    scikit-learn, which this function needs (``pip install scikit-learn``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("load_digits_sequences needs scikit-learn, which ships the "
                          "digits data: pip install scikit-learn") from exc
    digits = load_digits()
    X = digits.images.astype(np.float64) / 16.0
    return X, digits.target.astype(np.int64)


#: Standard-library modules whose source :func:`load_stdlib_text` reads, in this order.
#: Plain, long-lived pure-Python modules, chosen once and fixed so the corpus is the same
#: on every machine with the same Python version.
STDLIB_MODULES = (
    "textwrap", "string", "bisect", "heapq", "copy", "fractions", "numbers", "queue",
    "shlex", "glob", "fnmatch", "calendar", "difflib", "statistics", "csv", "pprint",
    "contextlib", "functools", "dataclasses", "enum", "argparse", "configparser",
    "gettext", "tempfile", "shutil", "tokenize", "traceback", "warnings", "weakref",
    "ipaddress", "datetime", "decimal", "inspect", "typing", "random", "threading",
    "subprocess", "zipfile", "tarfile", "pickle", "ast", "optparse", "locale",
)


def load_stdlib_text(max_chars: int = 400_000, modules: Sequence[str] = STDLIB_MODULES) -> str:
    """Python source text from the standard library, for character-level modelling.

    Reads the source files of ``modules`` (without importing them) in the given order and
    joins them, each preceded by a ``# ---- <module> ----`` line, until ``max_chars``
    characters (the last file is cut there).  Deterministic for a given Python version;
    modules absent from this Python, or shipped without source, are skipped.

    Returns
    -------
    str
    """
    from .._validation import _positive_int

    max_chars = _positive_int("max_chars", max_chars)
    parts, total = [], 0
    for name in _module_names(modules):
        source = _source(name)
        if source is None:
            continue
        piece = f"# ---- {name} ----\n{source}"
        parts.append(piece[:max_chars - total])
        total += len(parts[-1])
        if total >= max_chars:
            break
    if not parts:
        raise RuntimeError(f"no standard-library source files found for Python "
                           f"{sys.version.split()[0]} (is the standard library installed "
                           f"without .py sources?)")
    return "".join(parts)


#: The kinds of line :func:`load_stdlib_lines` labels, and the statements they stand for.
LINE_KINDS = {
    "import": "import / from ... import",
    "def": "def or class header",
    "control": "if / for / while / with / try header",
    "return": "return",
    "raise": "raise",
    "assign": "assignment (=, +=, annotated)",
    "call": "a call as a statement",
    "comment": "a comment line",
}


def _module_names(modules):
    from .._validation import _str_list

    return _str_list("modules", modules, "module names", "a module name (str)")


def _source(name):
    """The source text of the module ``name``, or None when it is absent from this
    Python or shipped without its .py file."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        return None
    try:
        with open(origin, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _line_kinds(source):
    """{line number: kind} for the lines of ``source`` that hold one whole statement (or
    a whole compound-statement header, or a comment)."""
    import ast
    import tokenize

    lines = source.splitlines()
    kinds = {}
    simple = {ast.Import: "import", ast.ImportFrom: "import", ast.Return: "return",
              ast.Raise: "raise", ast.Assign: "assign", ast.AugAssign: "assign",
              ast.AnnAssign: "assign"}
    header = {ast.FunctionDef: ("def", "def"), ast.AsyncFunctionDef: ("def", "async"),
              ast.ClassDef: ("def", "class"), ast.If: ("control", "if"),
              ast.For: ("control", "for"), ast.While: ("control", "while"),
              ast.With: ("control", "with"), ast.Try: ("control", "try")}
    seen = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.stmt):
            continue
        seen[node.lineno] = seen.get(node.lineno, 0) + 1
        text = lines[node.lineno - 1].strip()
        kind = simple.get(type(node))
        if kind is None and isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            kind = "call"
        if kind is not None:
            if node.end_lineno == node.lineno:
                kinds[node.lineno] = kind
            continue
        kind, keyword = header.get(type(node), (None, None))
        if kind is not None and text.startswith(keyword) and text.endswith(":"):
            kinds[node.lineno] = kind
    for k in [k for k, n in seen.items() if n > 1]:  # "a = 1; b = 2": not one statement
        kinds.pop(k, None)
    readline = io.StringIO(source).readline
    for tok in tokenize.generate_tokens(readline):
        if tok.type == tokenize.COMMENT and lines[tok.start[0] - 1].strip().startswith("#"):
            kinds[tok.start[0]] = "comment"
    return {n: k for n, k in kinds.items() if lines[n - 1].strip()}


def load_stdlib_lines(max_length: int = 80,
                      modules: Sequence[str] = STDLIB_MODULES) -> Tuple[list, list]:
    """Lines of the Python standard library's own source, each labelled by what it holds
    (:data:`LINE_KINDS`: import, def, control, return, raise, assign, call, comment).

    The source files of ``modules`` are parsed with :mod:`ast` (and :mod:`tokenize` for
    comments) without importing them; a line is kept when it holds one whole statement
    of those kinds (or a whole ``def``/``if``/... header, or a comment), stripped of its
    indentation, at most ``max_length`` characters long.  Each distinct (line, kind)
    pair is kept once, in the order found.  Deterministic for a given Python version.

    Returns
    -------
    (lines, kinds) : list of str, list of str
    """
    from .._validation import _positive_int

    max_length = _positive_int("max_length", max_length)
    lines, kinds, seen = [], [], set()
    for name in _module_names(modules):
        source = _source(name)
        if source is None:
            continue
        try:
            found = _line_kinds(source)
        except (SyntaxError, ValueError):  # pragma: no cover - a newer grammar
            continue
        text = source.splitlines()
        for number in sorted(found):
            line = text[number - 1].strip()
            key = (line, found[number])
            if len(line) <= max_length and key not in seen:
                seen.add(key)
                lines.append(line)
                kinds.append(found[number])
    if not lines:
        raise RuntimeError(f"no standard-library source files found for Python "
                           f"{sys.version.split()[0]}")
    return lines, kinds
