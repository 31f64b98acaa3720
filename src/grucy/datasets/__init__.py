"""Small real time series shipped with grucy, so demos and tests work offline.

Both files are public domain, copied unchanged from statsmodels; see README.md in this
directory for provenance.  They are read through :mod:`importlib.resources`, so they load
from a source tree, an installed wheel or a zip alike.
"""

from __future__ import annotations

import csv
import io
from importlib import resources

import numpy as np

__all__ = ["load_sunspots", "load_co2"]


def _rows(filename):
    """Header and data rows of one shipped CSV file."""
    text = resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    return header, [row for row in reader if row]


def load_sunspots():
    """Yearly mean sunspot number, 1700-2008 (309 years).

    Returns ``(years, values)``: ``years`` int64 (1700, 1701, ...), ``values`` float64.
    """
    header, rows = _rows("sunspots.csv")
    if header != ["YEAR", "SUNACTIVITY"]:  # pragma: no cover - guards the shipped file
        raise RuntimeError(f"unexpected header in sunspots.csv: {header}")
    years = np.array([int(float(r[0])) for r in rows], dtype=np.int64)
    values = np.array([float(r[1]) for r in rows], dtype=np.float64)
    return years, values


def load_co2():
    """Weekly atmospheric CO2 (ppm) at Mauna Loa, 1958-03-29 to 2001-12-29 (2284 weeks).

    Returns ``(dates, values)``: ``dates`` datetime64[D], ``values`` float64 with NaN for
    the weeks that have no measurement.
    """
    header, rows = _rows("co2.csv")
    if header != ["date", "co2"]:  # pragma: no cover - guards the shipped file
        raise RuntimeError(f"unexpected header in co2.csv: {header}")
    dates = np.array([f"{r[0][:4]}-{r[0][4:6]}-{r[0][6:8]}" for r in rows],
                     dtype="datetime64[D]")
    values = np.array([float(r[1]) if len(r) > 1 and r[1].strip() else np.nan
                       for r in rows], dtype=np.float64)
    return dates, values
