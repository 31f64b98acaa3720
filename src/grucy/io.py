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

import errno
import hashlib
import importlib
import json
import math
import os
import secrets
import struct
import sys
from typing import Any, Dict, Optional, Protocol, Type, TypeVar, Union, overload

import numpy as np

from ._limits import SizeLimitError, allocation_budget, memory_limit
from ._version import __version__

__all__ = ["FileFormatError", "FileSizeLimitError", "FORMAT_VERSION", "Saveable",
           "write_archive", "read_archive",
           "atomic_write", "temp_name_pattern", "save", "load", "register"]

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
    path = os.fsdecode(path)
    return os.path.join(os.path.dirname(os.path.abspath(path)),
                        f".{os.path.basename(path)}.*.tmp")


def _read_only_mount(directory):
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs (Windows): the write will tell
        return False


def atomic_write(path, chunks):
    """Write the byte strings ``chunks`` to ``path`` so that it is replaced all at once.

    The bytes go to a temporary file in the same directory (see
    :func:`temp_name_pattern`), are flushed to disk and renamed over ``path``; a failure
    or a crash at any point leaves the previous file as it was.  The new file gets the
    permissions of the one it replaces (else those of any new file).  A target its
    owner made read-only is refused, as ``open(path, "wb")`` would refuse it (the rename
    itself needs only the directory's permission).
    """
    path = os.fsdecode(path)
    if not path:
        raise ValueError("path must name a file, got an empty path")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save {path}: directory {directory} does not exist")
    if _read_only_mount(directory):  # (os.access below would blame the file)
        raise OSError(errno.EROFS, "cannot save: the file system is mounted read-only",
                      path)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, "cannot save over a write-protected file "
                              "(make it writable or delete it first)", path)
    tmp = f = None
    try:
        # The name is chosen before the file is made and the file is a file object from
        # the start (mkstemp's bare descriptor leaked, with its file, when a Ctrl-C
        # landed right after it returned: ~35 of each per 1000 interrupted saves).
        # Interrupted after open() returned, the file object is dropped (closed) and the
        # handler below removes the name.
        prefix = os.path.join(directory, f".{os.path.basename(path)}.")
        while f is None:
            tmp = f"{prefix}{secrets.token_hex(4)}.tmp"
            try:
                f = open(tmp, "xb")
            except FileExistsError:   # another file's name: not ours to remove
                tmp = None
        try:  # the permissions of the file it replaces, else those of any new file
            mode = os.stat(path).st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_UMASK
        os.fchmod(f.fileno(), mode)
        with f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
        if tmp is not None:
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
    atomic_write(path, [prefix, head, *blobs])


class FileSizeLimitError(FileFormatError, SizeLimitError):
    """A grucy file whose reading or rebuilding would need more memory than grucy may
    use, or more than its own size can justify: refused before anything is allocated.
    Both a :class:`FileFormatError` and a :class:`grucy.SizeLimitError`."""


# A header is parsed by json into Python objects: at most this many bytes of them per
# byte of header (an empty list, "[]," in the text, is a 56-byte object and a pointer).
_JSON_BYTES_PER_BYTE = 32
_READ_CHUNK = 1 << 20


def _read_into(f, view, digest, path):
    """Fill the byte view ``view`` from ``f``, hashing what is read."""
    done, n = 0, len(view)
    while done < n:
        got = f.readinto(view[done:done + _READ_CHUNK])
        if not got:
            raise FileFormatError(f"{path}: truncated grucy file (it ended while "
                                  f"being read)")
        digest.update(view[done:done + got])
        done += got


def _hash_rest(f, digest):
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    while True:
        got = f.readinto(buf)
        if not got:
            return
        digest.update(view[:got])


def _array_entries(entries, payload_len):
    """The array entries of a header, checked: names, dtypes, shapes, and the writer's
    layout (each array right after the previous one, together exactly the payload),
    so that the arrays never add up to more than the file holds."""
    checked, names, offset = [], set(), 0
    for e in entries:
        if not isinstance(e, dict):
            raise ValueError(f"array entry {e!r} is not an object")
        name, dtype, shape = e["name"], e["dtype"], e["shape"]
        if not isinstance(name, str) or name in names:
            raise ValueError(f"bad or repeated array name {name!r}")
        names.add(name)
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype!r} of {name!r} is not allowed")
        if not isinstance(shape, list) or len(shape) > 32 or not all(
                type(s) is int and s >= 0 for s in shape):
            raise ValueError(f"bad shape {shape!r} of {name!r}")
        nbytes = e["nbytes"]
        if (type(e["offset"]) is not int or type(nbytes) is not int
                or nbytes != math.prod(shape) * np.dtype(dtype).itemsize):
            raise ValueError(f"array {name!r}: offset {e['offset']!r} and nbytes "
                             f"{nbytes!r} do not fit its shape {shape} and dtype")
        if e["offset"] != offset or offset + nbytes > payload_len:
            raise ValueError(f"array {name!r} lies outside the file or out of place "
                             f"(offset {e['offset']}, {nbytes} bytes; the payload has "
                             f"{payload_len})")
        offset += nbytes
        checked.append((name, np.dtype(dtype), tuple(shape)))
    if offset != payload_len:
        raise ValueError(f"the arrays take {offset} bytes, the payload has {payload_len}")
    return checked


def read_archive(path, kind=None):
    """Read a file written by :func:`write_archive`; returns ``(kind, config, arrays)``.

    With ``kind`` given, a file holding something else is refused.  Raises
    FileNotFoundError for a missing file and :class:`FileFormatError` for anything that
    is not an intact grucy file of a version and byte order this grucy reads.

    Memory: the file is read in place into its arrays (each a new, C-ordered,
    writeable array, never a view of a larger buffer); at most the file's size in
    arrays plus its header as Python objects, checked against
    :func:`grucy._limits.memory_limit` before anything is read
    (:class:`FileSizeLimitError`).
    """
    return _read_archive(path, kind)[:3]


def _read_archive(path, kind):
    """:func:`read_archive`'s ``(kind, config, arrays)`` and the file's verified
    SHA-256 (32 bytes): two reads of the same file agree on it exactly when they read
    the same content."""
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
            raise FileSizeLimitError(f"{path}: {size} bytes, more than the memory grucy "
                                     f"may use ({memory_limit()} bytes; GRUCY_MAX_MEMORY "
                                     f"sets it)")
        if head_len > min(_MAX_HEADER, size):
            raise FileFormatError(f"{path}: truncated or damaged grucy file (header of "
                                  f"{head_len} bytes, {size} bytes follow)")
        needs = size + _JSON_BYTES_PER_BYTE * head_len
        if needs > memory_limit():
            raise FileSizeLimitError(f"{path}: reading it needs about {needs} bytes (its "
                                     f"arrays and its {head_len}-byte header parsed), "
                                     f"more than the memory grucy may use "
                                     f"({memory_limit()} bytes; GRUCY_MAX_MEMORY sets it)")
        digest = hashlib.sha256()
        head = bytearray(head_len)
        _read_into(f, memoryview(head), digest, path)
        try:
            header = json.loads(head.decode("utf-8"))
            if not isinstance(header, dict):
                raise TypeError(f"the header is a {type(header).__name__}, not an object")
            file_kind = header["kind"]
            config = header["config"]
            entries = header["arrays"]
            byteorder = header["byteorder"]
            if not isinstance(file_kind, str) or not isinstance(entries, list):
                raise TypeError("kind must be a string and arrays a list")
            layout = _array_entries(entries, size - head_len)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError,
                RecursionError) as exc:
            damage = exc
        else:
            damage = None
        if damage is not None:  # a corrupted file is reported as such, whatever it says
            _hash_rest(f, digest)
            if digest.digest() != checksum:
                raise FileFormatError(f"{path}: checksum mismatch: the file is truncated "
                                      f"or corrupted")
            raise FileFormatError(f"{path}: damaged grucy header ({damage})")
        arrays = {}
        for name, dtype, shape in layout:
            arr = np.empty(shape, dtype)
            if arr.nbytes:
                _read_into(f, memoryview(arr.reshape(-1).view(np.uint8)), digest, path)
            arrays[name] = arr
        _hash_rest(f, digest)  # (nothing, unless the file grew meanwhile)
    if digest.digest() != checksum:
        raise FileFormatError(f"{path}: checksum mismatch: the file is truncated or "
                              f"corrupted")
    if byteorder not in ("little", "big"):
        raise FileFormatError(f"{path}: damaged grucy header (byteorder {byteorder!r})")
    if byteorder != sys.byteorder:
        raise FileFormatError(f"{path}: written on a {byteorder}-endian machine; this "
                              f"machine is {sys.byteorder}-endian")
    if kind is not None and file_kind != kind:
        raise FileFormatError(f"{path}: holds a {file_kind!r}, expected a {kind!r}")
    return file_kind, config, arrays, checksum


# -- save / load of layers and models ---------------------------------------------------
# The kinds a file can hold are the classes decorated with @register, each under the
# public import path of its class ("grucy.GRU", "grucy.reference.GRU", "grucy.Forecaster").
# This module imports none of them: a class registers itself when its module is imported,
# and load() imports the module a kind names when that has not happened yet.  So the file
# format depends on nothing above it, and a new kind needs only its @register.
_REGISTRY: Dict[str, type] = {}

#: A path to a grucy file: str or os.PathLike.
PathLike = Union[str, os.PathLike[str]]


class Saveable(Protocol):
    """What :func:`save` writes and :func:`load` returns: a grucy layer or model (a
    class decorated with :func:`register`: ``grucy.GRU``, ``grucy.reference.GRU``,
    ``grucy.reference.RNN``, ``grucy.Forecaster``, ``grucy.GRUClassifier``,
    ``grucy.GRURegressor``, ``grucy.CharLM``).  Pass the class to :func:`load` to get
    that type."""

    def _get_config(self) -> Dict[str, Any]: ...

    def _get_arrays(self) -> Dict[str, np.ndarray]: ...


_T = TypeVar("_T")


def register(cls=None, *, kind=None):
    """Class decorator making a class saveable under ``kind`` (default: qualified name).

    ``kind`` is where users import the class from (``"grucy.GRU"``), so that
    :func:`load` can import it by that path.  The class provides ``_get_config() -> dict``
    (JSON), ``_get_arrays() -> dict`` and a classmethod ``_from_saved(config, arrays)``.
    ``@register`` or ``@register(kind="grucy.GRU")``.
    """
    def deco(c):
        k = kind or f"{c.__module__}.{c.__qualname__}"
        _REGISTRY[k] = c
        c._grucy_kind = k
        return c
    return deco if cls is None else deco(cls)


def save(obj: Saveable, path: PathLike) -> None:
    """Save a layer or model to ``path`` in grucy's file format (atomically).

    Works for ``grucy.GRU``, ``grucy.reference.GRU`` and the models; ``load`` gives back an
    equal object with bit-identical weights.  A file ``load`` would refuse is never
    written (the previous file stays): every number of a layer or model must be finite
    (weights, scales, means), else ValueError naming the array.
    """
    kind = getattr(type(obj), "_grucy_kind", None)
    if kind is None or _REGISTRY.get(kind) is not type(obj):
        raise TypeError(f"cannot save a {type(obj).__name__}; saveable: "
                        f"{sorted(_REGISTRY)}")
    config, arrays = obj._get_config(), obj._get_arrays()
    for name, value in arrays.items():
        _check_finite_array(name, value, f"{type(obj).__name__} cannot be saved: ")
    _check_rebuilds(obj, config, arrays)
    write_archive(path, kind, config, arrays)


def _check_rebuilds(obj, config, arrays):
    """Rebuild ``obj`` in memory from what a file of it would hold (the config through
    JSON and back), as :func:`load` does: a ValueError, and no file, when that fails
    (parameters resized or replaced, fitted attributes changed by hand...)."""
    try:
        plain = json.loads(json.dumps(config, allow_nan=False))
    except (TypeError, ValueError):
        return  # (write_archive says what is not plain JSON)
    try:
        type(obj)._from_saved(plain, {k: np.ascontiguousarray(v) for k, v in arrays.items()})
    except (SizeLimitError, *_REBUILD_ERRORS) as exc:
        raise ValueError(f"{type(obj).__name__} cannot be saved: the file would not load "
                         f"again ({type(exc).__name__}: {exc})"[:2000]) from None


def _check_finite_array(name, value, prefix):
    arr = np.asarray(value)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{prefix}array {name!r} contains NaN or inf (first at index "
                         f"{where}, value {arr[where]}); a grucy file of a layer or "
                         f"model holds finite numbers only")


#: While a file is rebuilt, one construction may allocate at most this many times the
#: bytes of the file's arrays (plus _LOAD_SLACK): the parameters, their gradients and
#: the temporary arrays of building them.
_LOAD_FACTOR = 4
_LOAD_SLACK = 16 << 20
# Exceptions a hostile file can provoke in a class's _from_saved (a list where an object
# is expected, a missing attribute, an index out of range...): all a FileFormatError.
_REBUILD_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError,
                   LookupError, ArithmeticError, RecursionError, UnicodeError)


@overload
def load(path: PathLike) -> Saveable: ...


@overload
def load(path: PathLike, cls: Type[_T]) -> _T: ...


def load(path: PathLike, cls: Optional[type] = None) -> Any:
    """Load what :func:`save` wrote.  Never executes code from the file.

    Parameters
    ----------
    path : str or os.PathLike
    cls : type, optional
        The class the file must hold, e.g. ``grucy.Forecaster``: a file holding anything
        else raises :class:`FileFormatError` (before anything is built), and a type
        checker knows what ``load`` returns.  None: any saved grucy object.

    Returns
    -------
    Saveable
        A layer or model equal to the saved one, with bit-identical weights: an instance
        of ``cls`` when given.

    Raises
    ------
    FileFormatError
        For anything a file can hold that is not what ``save`` writes
        (FileNotFoundError and the other OSErrors for paths), never another exception.
        Sizes come from the file and are checked before anything is allocated: reading
        takes the memory of the file's arrays (plus its header as Python objects), at
        most the memory limit (``GRUCY_MAX_MEMORY``; see
        :func:`grucy._limits.memory_limit`); rebuilding what it holds may then
        allocate, per part (a layer, a readout), at most 4 times the bytes of its arrays
        + 16 MiB (the parameters, their gradients, the temporaries of building them)
        and at most the memory left beside the arrays.  Beyond either,
        :class:`FileSizeLimitError` (a FileFormatError and a
        :class:`grucy.SizeLimitError`) names the bound: a few bytes declaring a huge
        layer are refused at once.
    """
    if cls is not None and not isinstance(cls, type):
        raise TypeError(f"cls must be a class (grucy.GRU, grucy.Forecaster, ...), got "
                        f"{cls!r}")
    where = os.fspath(path)
    kind, config, arrays = read_archive(path)
    found = _registered(kind, where)
    if cls is not None and not issubclass(found, cls):
        raise FileFormatError(f"{where}: holds a {kind!r}, not a "
                              f"{cls.__module__}.{cls.__qualname__}")
    for name, value in arrays.items():
        try:
            _check_finite_array(name, value, "")
        except ValueError as exc:
            raise FileFormatError(f"{where}: cannot rebuild the {kind!r} it holds: "
                                  f"{exc}") from None
    nbytes = sum(a.nbytes for a in arrays.values())
    budget = _LOAD_FACTOR * nbytes + _LOAD_SLACK
    reason = (f"a file whose arrays hold {nbytes} bytes may make grucy allocate while "
              f"it is rebuilt ({budget} bytes: {_LOAD_FACTOR} times them + "
              f"{_LOAD_SLACK >> 20} MiB)")
    room = memory_limit() - nbytes
    if room < budget:
        budget = max(room, 0)
        reason = (f"the {budget} bytes left beside the file's arrays ({nbytes} bytes) "
                  f"within the {memory_limit()} bytes grucy may use (GRUCY_MAX_MEMORY "
                  f"sets it)")
    try:
        with allocation_budget(budget, reason):
            return found._from_saved(config, arrays)  # type: ignore[attr-defined]
    except SizeLimitError as exc:
        raise FileSizeLimitError(f"{where}: cannot rebuild the {kind!r} it holds: "
                                 f"{exc}") from None
    except _REBUILD_ERRORS as exc:
        raise FileFormatError(f"{where}: cannot rebuild the {kind!r} it holds: "
                              f"{type(exc).__name__}: {exc}"[:2000]) from None


def _registered(kind, path):
    """The class registered for ``kind``, importing grucy's module of that name first
    when it is not loaded yet (only public grucy modules: a file never makes grucy import
    anything else)."""
    if kind not in _REGISTRY:
        module, _, name = kind.rpartition(".")
        parts = module.split(".")
        if parts[0] == "grucy" and all(p.isidentifier() and not p.startswith("_")
                                       for p in parts[1:]):
            try:
                getattr(importlib.import_module(module), name, None)  # registers it
            except ModuleNotFoundError as exc:
                if exc.name != module:  # a grucy module that needs what is missing
                    raise FileFormatError(f"{os.fspath(path)}: holds a {kind!r}, which "
                                          f"this grucy cannot build here: {exc}") from None
            except ImportError as exc:  # grucy's compiled kernels are not built
                raise FileFormatError(f"{os.fspath(path)}: holds a {kind!r}, which this "
                                      f"grucy cannot build here: {exc}") from None
    cls = _REGISTRY.get(kind)
    if cls is None and kind == "grucy.checkpoint":  # (training/checkpoint.py's kind)
        raise FileFormatError(f"{os.fspath(path)}: is a training checkpoint, not a model: "
                              f"resume it with fit(..., resume={os.fspath(path)!r}) (or "
                              f"grucy train --resume), then save the model")
    if cls is None:
        raise FileFormatError(f"{os.fspath(path)}: holds a {kind!r}, which this grucy "
                              f"cannot build (known: {sorted(_REGISTRY)})")
    return cls
