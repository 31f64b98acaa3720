"""How much grucy may compute: the memory one call may plan to allocate, and the sizes
the kernels' 32-bit indices and BLAS calls can reach.  Both are checked before anything
is allocated and refused with :class:`SizeLimitError`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os

# The kernels index with C ints and call BLAS with 32-bit integer sizes.
INT32_MAX = 2**31 - 1


class SizeLimitError(ValueError, MemoryError):
    """A size too large to compute: over the memory grucy may use, or over what the
    kernels' 32-bit BLAS sizes can index.  Raised before anything is allocated; it is
    both a ValueError (a bad argument) and a MemoryError (code handling out-of-memory
    generically catches it)."""


def _parse_bytes(text):
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in units and t[-1:] else ""
    number = t[:-1] if unit else t
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"GRUCY_MAX_MEMORY must be a number of bytes such as 8e9 or "
                         f"16G, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise ValueError(f"GRUCY_MAX_MEMORY must be positive and finite, got {text!r}")
    return int(value)


@functools.lru_cache(maxsize=1)
def _machine_memory():
    """Physical memory, lowered to a cgroup (container) limit when there is one."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        pass
    for path in ("/sys/fs/cgroup/memory.max",
                 "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else 2**63


def _address_space_limit():
    """The address space left under ``ulimit -v`` (RLIMIT_AS, read at every call: a
    process may lower it), or None when there is no such limit."""
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    try:  # what the process maps already counts against it
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        used = 0
    return max(soft - used, 0)


def memory_limit():
    """Bytes one grucy call may plan to allocate.

    ``GRUCY_MAX_MEMORY`` (bytes, or with a K/M/G/T/P suffix) when set; otherwise the
    smaller of physical memory, the container (cgroup) limit (these two are read once
    per process) and the address space left under ``ulimit -v`` (read at each call).
    Asking for more could only end in a MemoryError or, with memory overcommit, in the
    kernel's OOM killer ending the process, so it is refused up front.
    """
    env = os.environ.get("GRUCY_MAX_MEMORY")
    if env:
        return _parse_bytes(env)
    limit = _machine_memory()
    rlimit = _address_space_limit()
    return limit if rlimit is None else min(limit, rlimit)


def _gib(nbytes):
    return f"{nbytes / 2**30:.3g} GiB"


def _describe(what):
    return what() if callable(what) else what


# While a file is rebuilt (grucy.load), how much one construction may allocate: a bound
# from the file's own size, so that a few bytes declaring a huge layer are refused
# before anything is allocated (and a genuine file is never refused by it).
_BUDGET = contextvars.ContextVar("grucy_allocation_budget", default=None)


@contextlib.contextmanager
def allocation_budget(nbytes, reason):
    """Within the block, :func:`check_memory` also refuses any single request above
    ``nbytes`` (SizeLimitError naming ``reason``, the source of that bound)."""
    token = _BUDGET.set((int(nbytes), reason))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def check_memory(what, nbytes):
    """SizeLimitError unless ``nbytes`` fits in :func:`memory_limit` (and in the
    budget of an :func:`allocation_budget` block around the call).

    ``what`` names the request: a string, or a callable returning one (built only when
    the check fails, to keep small calls fast).
    """
    limit = memory_limit()
    if nbytes > limit:
        env = os.environ.get("GRUCY_MAX_MEMORY")   # (the limit's source, as memory_limit)
        why = (f"GRUCY_MAX_MEMORY={env}" if env else "physical memory, container and "
               "ulimit -v limits; set GRUCY_MAX_MEMORY to change")
        raise SizeLimitError(f"{_describe(what)} needs about {_gib(nbytes)}, more than the "
                             f"{_gib(limit)} grucy may use ({why})")
    budget = _BUDGET.get()
    if budget is not None and nbytes > budget[0]:
        raise SizeLimitError(f"{_describe(what)} needs about {_gib(nbytes)}, more than "
                             f"{budget[1]}")


def check_int32(what, products):
    """SizeLimitError when a size the kernels index with a 32-bit int overflows it.

    ``products`` maps a readable formula ("T*B") to its value.
    """
    for label, value in products.items():
        if value > INT32_MAX:
            raise SizeLimitError(f"{_describe(what)}: {label} = {value} "
                                 f"exceeds 2**31-1, the largest size the 32-bit BLAS calls "
                                 f"and kernel indices accept")
