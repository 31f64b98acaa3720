"""Reading the commands' input files: a CSV column, CSV rows, a text."""

from __future__ import annotations

import csv

from ._common import CLIError


HEADER_HELP = ("whether the CSV's first row names the columns (default auto: when it "
               "holds anything but numbers; a header of numbers, such as the 0 that "
               "pandas writes for an unnamed column, needs yes)")


def _has_header(first_row, header):
    """--header: "yes", "no", or "auto" (a first row with anything but numbers)."""
    if header == "auto":
        return not all(_is_number(v) for v in first_row)
    return header == "yes"


def _read_column(path, column, missing="error", header="auto"):
    """One numeric column of a CSV file (by header name or 0-based index) as float64."""
    import numpy as np

    rows = _csv_rows(path)
    if not rows:
        raise CLIError(f"{path} is empty")
    header_row = rows[0]
    has_header = _has_header(header_row, header)
    header = header_row
    if column is None:
        index = 0 if len(header) == 1 else len(header) - 1
    elif column.isascii() and column.isdigit():   # (str.isdigit alone takes "²")
        index = int(column)
        if index >= len(header):
            raise CLIError(f"column {index} is out of range: {path} has {len(header)} "
                           f"column{'s' if len(header) != 1 else ''} (indices 0 to "
                           f"{len(header) - 1})")
    elif has_header and column in header:
        index = header.index(column)
    else:
        names = header if has_header else "(the file has no header)"
        raise CLIError(f"column {column!r} not found in {path}; columns: {names}")
    values = []
    for line, row in enumerate(rows[1 if has_header else 0:], start=2 if has_header else 1):
        field = row[index].strip() if index < len(row) else ""
        if field == "":
            values.append(float("nan"))
        elif _is_number(field):
            values.append(float(field))
        else:
            raise CLIError(f"{path}, line {line}: {field!r} in column {index} is not a number")
    series = np.array(values, dtype=np.float64)
    gaps = ~np.isfinite(series)
    if gaps.any():
        if missing == "error":
            first = int(np.argmax(gaps)) + (2 if has_header else 1)
            raise CLIError(f"{path}: column {index} has {int(gaps.sum())} missing or "
                           f"non-finite values (the first on line {first}); use "
                           f"--missing drop or --missing interpolate")
        if gaps.all():
            raise CLIError(f"{path}: no values in column {index}")
        if missing == "drop":
            series = series[~gaps]
        else:
            t = np.arange(len(series))
            series[gaps] = np.interp(t[gaps], t[~gaps], series[~gaps])
    if series.size == 0:
        raise CLIError(f"{path}: no values in column {index}")
    return series


def _read_rows(path, header="auto"):
    """A numeric CSV (optional header) as a 2-D float64 array: one sequence per row."""
    import numpy as np

    rows = _csv_rows(path)
    first = 1 if rows and _has_header(rows[0], header) else 0
    rows = rows[first:]
    for i, r in enumerate(rows):
        if len(r) != len(rows[0]):  # (NumPy's own words were of an "inhomogeneous shape")
            raise CLIError(f"{path}: every row must hold the same number of values (one "
                           f"sequence per row); row {i + first + 1} holds {len(r)}, the "
                           f"first {len(rows[0])}")
    try:
        return np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise CLIError(f"{path}: every row must be numbers ({exc})") from None


def _csv_rows(path):
    """The non-empty rows of a UTF-8 CSV file."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [r for r in csv.reader(f) if r]
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path} is not UTF-8 text ({exc.reason})") from None


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path} is not UTF-8 text ({exc.reason})") from None


def _is_number(s):
    try:
        float(s)
    except ValueError:
        return False
    return True
