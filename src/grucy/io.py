"""grucy's file format, and ``save`` / ``load`` for layers and models.

A grucy file is one self-describing archive, read without pickle and without executing
anything from the file::

    offset  size  content
    0       8     magic  b"GRUCY\\x00\\r\\n" (a text-mode copy or a foreign file fails here)
    8       4     format version, uint32 little-endian
    12      8     header length in bytes, uint64 little-endian
    20      32    SHA-256 of everything after this field (header + payload)
    52      n     header: UTF-8 JSON {"kind", "config", "arrays", "byteorder", "writer"}
    52+n    ...   payload: the arrays' raw bytes, C order, at the offsets the header gives

``config`` is plain JSON (numbers, strings, lists, dicts, booleans, null).  Each entry of
``arrays`` names an array, its dtype (from a short whitelist), shape, offset and size.
Arrays are stored in the byte order of the machine that wrote them, recorded in the
header; a file from a machine of the other byte order is refused with a clear error.

Writes are atomic: the file is written to a temporary name in the same directory,
flushed to disk and renamed over the target, so a crash mid-save leaves the previous file
intact.  Loads check the magic, version, checksum, header and every array's bounds before
building anything; a damaged file raises :class:`FileFormatError` and never returns
wrong numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
import tempfile

import numpy as np

from ._base import memory_limit

__all__ = ["FileFormatError", "FORMAT_VERSION", "write_archive", "read_archive",
           "save", "load", "register"]
__all__ += ["temp_name_pattern"]

MAGIC = b"GRUCY\x00\r\n"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIQ32s")
_MAX_HEADER = 64 << 20
# Only plain numeric dtypes; never object arrays, so nothing in a file can run code.
_DTYPES = {"float32", "float64", "int8", "int32", "int64", "uint8", "uint32", "uint64",
           "bool"}


class FileFormatError(ValueError):
    """A file is not a grucy file, is damaged, or cannot be read on this machine."""


# The process umask, read once: mkstemp creates files readable by the owner only, and a
# saved model should get the permissions any other new file gets.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def temp_name_pattern(path):
    """Glob pattern of the temporary files a save of ``path`` writes before renaming.

    A save killed mid-write (SIGKILL, power loss) leaves one such file next to the
    target; the target itself is never touched until the rename.  grucy never reads
    these files and never deletes them on its own (it cannot tell a dead save's file
    from one another process is still writing); delete them when no save is running.
    They start with a dot and end in ``.tmp``, so ``*.grucy`` globs do not see them.
    """
    path = os.fspath(path)
    return os.path.join(os.path.dirname(os.path.abspath(path)),
                        f".{os.path.basename(path)}.*.tmp")


def _atomic_write(path, chunks):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save {path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        try:  # the permissions of the file it replaces, else those of any new file
            mode = os.stat(path).st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_UMASK
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def write_archive(path, kind, config, arrays):
    """Write ``arrays`` (name -> ndarray) with a JSON ``config`` to ``path``, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; its directory must exist.  An existing file is replaced only once the
        new one is completely on disk.
    kind : str
        What the file holds (``"GRU"``, a model class name, ``"checkpoint"``...).
    config : dict
        JSON-serialisable description (constructor arguments, metadata).
    arrays : dict of str to array_like
        Numeric arrays; dtypes float32/64, int8/32/64, uint8/32/64 or bool.
    """
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"kind must be a non-empty string, got {kind!r}")
    if not isinstance(arrays, dict):
        raise TypeError(f"arrays must be a dict of name -> array, got {type(arrays).__name__}")
    entries, blobs, offset = [], [], 0
    for name, value in arrays.items():
        if not isinstance(name, str):
            raise TypeError(f"array names must be strings, got {name!r}")
        arr = np.ascontiguousarray(value)
        if arr.dtype.name not in _DTYPES:
            raise TypeError(f"array {name!r} has dtype {arr.dtype}; grucy files hold "
                            f"only {sorted(_DTYPES)}")
        data = arr.tobytes()
        entries.append({"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape),
                        "offset": offset, "nbytes": len(data)})
        blobs.append(data)
        offset += len(data)
    from . import __version__

    header = {"kind": kind, "config": config, "arrays": entries,
              "byteorder": sys.byteorder, "writer": f"grucy {__version__}"}
    try:
        head = json.dumps(header, allow_nan=False, sort_keys=True).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"config must be plain JSON (finite numbers, strings, lists, "
                        f"dicts): {exc}") from None
    digest = hashlib.sha256(head)
    for b in blobs:
        digest.update(b)
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(head), digest.digest())
    _atomic_write(path, [prefix, head, *blobs])


def read_archive(path, kind=None):
    """Read a file written by :func:`write_archive`; returns ``(kind, config, arrays)``.

    With ``kind`` given, a file holding something else is refused.  Raises
    FileNotFoundError for a missing file and :class:`FileFormatError` for anything that
    is not an intact grucy file of a version and byte order this grucy reads.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read(_PREFIX.size)
        if len(raw) < _PREFIX.size:
            if MAGIC.startswith(raw[:8]) and raw:
                raise FileFormatError(f"{path}: truncated grucy file ({len(raw)} bytes)")
            raise FileFormatError(f"{path}: not a grucy file (too short, {len(raw)} "
                                  f"bytes)")
        magic, version, head_len, checksum = _PREFIX.unpack_from(raw)
        if magic != MAGIC:
            if magic.replace(b"\r\n", b"\n").startswith(b"GRUCY"):
                raise FileFormatError(f"{path}: damaged grucy file (line endings were "
                                      f"altered)")
            raise FileFormatError(f"{path}: not a grucy file (bad magic {magic[:8]!r})")
        if version != FORMAT_VERSION:
            raise FileFormatError(f"{path}: grucy file format version {version}; this "
                                  f"grucy reads version {FORMAT_VERSION}")
        # Only now, knowing it is a grucy file, read the rest (never more than memory).
        size = os.fstat(f.fileno()).st_size - _PREFIX.size
        if size > memory_limit():
            raise FileFormatError(f"{path}: {size} bytes, more than the memory grucy may "
                                  f"use ({memory_limit()} bytes)")
        body = memoryview(f.read())
    if head_len > min(_MAX_HEADER, len(body)):
        raise FileFormatError(f"{path}: truncated or damaged grucy file (header of "
                              f"{head_len} bytes, {len(body)} bytes follow)")
    if hashlib.sha256(body).digest() != checksum:
        raise FileFormatError(f"{path}: checksum mismatch: the file is truncated or "
                              f"corrupted")
    try:
        header = json.loads(bytes(body[:head_len]).decode("utf-8"))
        file_kind = header["kind"]
        config = header["config"]
        entries = header["arrays"]
        byteorder = header["byteorder"]
        if not isinstance(file_kind, str) or not isinstance(entries, list):
            raise TypeError("kind must be a string and arrays a list")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise FileFormatError(f"{path}: damaged grucy header ({exc})") from None
    if byteorder not in ("little", "big"):
        raise FileFormatError(f"{path}: damaged grucy header (byteorder {byteorder!r})")
    if byteorder != sys.byteorder:
        raise FileFormatError(f"{path}: written on a {byteorder}-endian machine; this "
                              f"machine is {sys.byteorder}-endian")
    if kind is not None and file_kind != kind:
        raise FileFormatError(f"{path}: holds a {file_kind!r}, expected a {kind!r}")
    payload = body[head_len:]
    arrays = {}
    try:
        for e in entries:
            name, dtype, shape = e["name"], e["dtype"], tuple(e["shape"])
            offset, nbytes = e["offset"], e["nbytes"]
            if not isinstance(name, str) or name in arrays:
                raise ValueError(f"bad or repeated array name {name!r}")
            if not isinstance(dtype, str) or dtype not in _DTYPES:
                raise ValueError(f"dtype {dtype!r} of {name!r} is not allowed")
            if not all(type(s) is int and s >= 0 for s in shape):
                raise ValueError(f"bad shape {shape} of {name!r}")
            itemsize = np.dtype(dtype).itemsize
            if (type(offset) is not int or offset < 0 or type(nbytes) is not int
                    or nbytes != math.prod(shape) * itemsize
                    or offset + nbytes > len(payload)):
                raise ValueError(f"array {name!r} lies outside the file")
            arrays[name] = np.frombuffer(payload[offset:offset + nbytes],
                                         dtype=dtype).reshape(shape).copy()
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{path}: damaged grucy header ({exc})") from None
    return file_kind, config, arrays


# -- save / load of layers and models ---------------------------------------------------
_REGISTRY = {}


def register(cls=None, *, kind=None):
    """Class decorator making a class saveable under ``kind`` (default: qualified name).

    The class provides ``_get_config() -> dict`` (JSON), ``_get_arrays() -> dict`` and a
    classmethod ``_from_saved(config, arrays)``.  ``@register`` or
    ``@register(kind="grucy.GRU")``.
    """
    def deco(c):
        k = kind or f"{c.__module__}.{c.__qualname__}"
        _REGISTRY[k] = c
        c._grucy_kind = k
        return c
    return deco if cls is None else deco(cls)


def save(obj, path):
    """Save a layer or model to ``path`` in grucy's file format (atomically).

    Works for ``grucy.GRU``, ``grucy.reference.GRU`` and the models; ``load`` gives back an
    equal object with bit-identical weights.
    """
    kind = getattr(type(obj), "_grucy_kind", None)
    if kind is None or _REGISTRY.get(kind) is not type(obj):
        raise TypeError(f"cannot save a {type(obj).__name__}; saveable: "
                        f"{sorted(_REGISTRY)}")
    write_archive(path, kind, obj._get_config(), obj._get_arrays())


def load(path):
    """Load what :func:`save` wrote.  Never executes code from the file."""
    _ensure_registered()
    kind, config, arrays = read_archive(path)
    cls = _REGISTRY.get(kind)
    if cls is None:
        raise FileFormatError(f"{os.fspath(path)}: holds a {kind!r}, which this grucy "
                              f"cannot build (known: {sorted(_REGISTRY)})")
    try:
        return cls._from_saved(config, arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{os.fspath(path)}: cannot rebuild the {kind!r} it "
                              f"holds: {exc}") from None


def _ensure_registered():
    # Importing the modules registers their classes.
    from . import layer, models, reference  # noqa: F401
