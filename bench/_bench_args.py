"""Option types shared by the bench/ scripts.

Each is an argparse ``type=``: a bad value raises ``argparse.ArgumentTypeError``, which
argparse turns into the one-line ``error: argument --x: ...`` and exit status 2 before
the script does any work.  Output paths are checked the same way, up front, so that a
typo in a path does not end a finished run in a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile

__all__ = ["number", "positive_int", "nonnegative_int", "positive_float",
           "nonnegative_float", "fraction", "shape", "parse_shapes", "shape_list",
           "subset", "thread_counts", "output_path", "output_dir", "checked_default"]


# -- numbers ------------------------------------------------------------------------------
def number(convert, what, minimum=0, strict=True, maximum=None):
    """An argparse type: ``convert(text)`` if it is > minimum (>= when not strict) and,
    with ``maximum``, < maximum; NaN and infinity are refused."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        ok = value > minimum if strict else value >= minimum
        if maximum is not None:
            ok = ok and value < maximum
        if not ok or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    return parse


positive_int = number(int, "a positive integer")
nonnegative_int = number(int, "a non-negative integer", strict=False)
positive_float = number(float, "a positive number")
nonnegative_float = number(float, "a non-negative number", strict=False)
fraction = number(float, "a fraction in [0, 1)", strict=False, maximum=1)


def thread_counts(text):
    """``8`` or ``1,2,4,8,16``: distinct positive counts, ascending."""
    try:
        counts = sorted({positive_int(t) for t in text.split(",") if t.strip()})
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer or a comma-separated list of them, got {text!r}") \
            from None
    if not counts:
        raise argparse.ArgumentTypeError("no thread count given")
    return counts


# -- shapes -------------------------------------------------------------------------------
def shape(text, n=4, what="BxTxIxH"):
    """``16x100x64x128``: n positive integers joined by x, as a tuple."""
    parts = text.strip().lower().split("x")
    if len(parts) != n or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what} with positive integers")
    return tuple(int(p) for p in parts)


def _default_shapes():
    from _bench_peers import DEFAULT_SHAPES  # here: this module imports no numpy

    return DEFAULT_SHAPES


def shape_list(indices=_default_shapes):
    """An argparse type for a comma-separated list of BxTxIxH shapes and 1-based indices
    into ``indices()`` (default: the benchmark's core shapes); ``None``: shapes only."""
    def parse(text):
        nonlocal indices
        if callable(indices):
            indices = indices()
        shapes = []
        for item in text.split(","):
            item = item.strip().lower()
            if not item:
                continue
            if "x" in item:
                shapes.append(shape(item))
            elif indices and item.isdigit() and 1 <= int(item) <= len(indices):
                shapes.append(tuple(indices[int(item) - 1]))
            elif indices:
                raise argparse.ArgumentTypeError(
                    f"{item!r} is neither an index 1..{len(indices)} nor BxTxIxH")
            else:
                raise argparse.ArgumentTypeError(
                    f"{item!r} is not BxTxIxH with positive integers")
        if not shapes:
            raise argparse.ArgumentTypeError("no shapes given")
        return shapes
    return parse


parse_shapes = shape_list()
parse_shapes.__doc__ = ("``1,3`` (1-based indices into the default list) or "
                        "``16x100x64x128`` (BxTxIxH).")


def subset(allowed, what, allow_all=True):
    """An argparse type: a non-empty comma-separated subset of ``allowed`` (or 'all')."""
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if allow_all and items == ["all"]:
            return list(allowed)
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{what} must be a comma-separated subset of {','.join(allowed)}"
                f"{' (or all)' if allow_all else ''}, got {text!r}")
        return items
    return parse


# -- output paths -------------------------------------------------------------------------
def _writable_folder(folder, given):
    """The nearest existing folder at or above ``folder`` must take a new file (missing
    folders below it are made when the file is written)."""
    folder = os.path.abspath(folder)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"{given}: {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"{given}: cannot write in {folder} ({exc.strerror or exc})") from None


def output_path(folder_ok=False, literals=()):
    """An argparse type for a file to write at the end of a run, checked now: a folder
    (or a path ending in /) only with ``folder_ok`` (the script then picks the name);
    the file's folder, or the nearest one above it that exists, must take a new file.
    ``literals`` (such as ``-`` for stdout) pass unchecked."""
    def parse(text):
        if text in literals:
            return text
        if not text:
            raise argparse.ArgumentTypeError("empty path")
        is_dir = text.endswith(("/", os.sep)) or os.path.isdir(text)
        if is_dir and not folder_ok:
            raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
        _writable_folder(text if is_dir else os.path.dirname(os.path.abspath(text)), text)
        return text
    return parse


def output_dir(text):
    """An argparse type for a folder to write into (made if missing), checked now."""
    if not text:
        raise argparse.ArgumentTypeError("empty path")
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is not a folder")
    _writable_folder(text, text)
    return text


def checked_default(parser, option, value, check):
    """``check(value)`` for an option's default that argparse left unchecked (given as
    ``None`` so that worker processes do not check it), or the option's usual error."""
    try:
        return check(value)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"argument {option}: {exc}")
