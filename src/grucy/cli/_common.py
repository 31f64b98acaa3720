"""What every command shares: its errors, argument types and checks of paths."""

from __future__ import annotations

import argparse
import math
import os
import tempfile


class CLIError(Exception):
    """A user error: printed as ``grucy <command>: error: ...``, exit status 2."""

    status = 2


class CLIFailure(CLIError):
    """The command could not do its work (not a wrong argument): exit status 1."""

    status = 1


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line: ``grucy train: error: ... (see ...)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# -- argument types (argparse reports their errors as "argument --x: ...") ---------------
def _integer(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def _number(low=None, high=None, *, low_open=False, high_open=True):
    """A finite float in [low, high) (or (low, ...) with ``low_open``)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low}, "
                                             f"got {text}")
        if high is not None and (value > high or (high_open and value == high)):
            raise argparse.ArgumentTypeError(f"must be {'<' if high_open else '<='} "
                                             f"{high}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


_COUNT = _integer(1)  # epochs, sizes, steps: positive
_SEED = _integer(0)


def _given(args, names):
    """The options among ``names`` (dest names) that were given on the command line."""
    return ["--" + n.replace("_", "-") if len(n) > 1 else "-" + n
            for n in names if getattr(args, n) not in (None, False)]


def _refuse(args, names, why):
    given = _given(args, names)
    if given:
        raise CLIError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not "
                       f"apply {why}")


def _check_output(path, option):
    """Fail now, not after training, if ``path`` cannot be written: its directory must
    exist and take a new file, and ``path`` must not be a directory.  ``{epoch}`` in a
    checkpoint path stands for a number."""
    given = os.fspath(path)
    path = given.replace("{epoch}", "1")
    if os.path.isdir(path):
        raise CLIError(f"{option} {given} is a directory; give a file name, e.g. "
                       f"{os.path.join(given, 'model.grucy')}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(f"{option} {given}: the directory {directory} does not exist")
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise CLIError(f"{option} {given}: cannot write in {directory} "
                       f"({exc.strerror or exc})") from None


def _importable(name):
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is not one, a None module
        return False
