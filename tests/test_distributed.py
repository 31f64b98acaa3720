"""Data-parallel training over MPI: the communicator, and equivalence with one process.

The MPI tests start ``mpirun -n 2`` on this machine (loopback) and are skipped with a
reason when mpi4py or an MPI launcher is missing.  The programs the ranks run are in
``distributed_worker.py``.  ``GRUCY_TEST_MPIEXEC`` overrides the launcher prefix, e.g.
``GRUCY_TEST_MPIEXEC="srun -n {n}"``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import grucy
import grucy.datasets
from grucy import distributed
from grucy.distributed import (SingleProcess, _contiguous_part, get_communicator,
                               launcher_size, local_mpiexec)
from grucy.io import read_archive

from conftest import importorskip

HERE = Path(__file__).resolve().parent
WORKER = str(HERE / "distributed_worker.py")
TIMEOUT = 120  # seconds per launched job; far above the few seconds they take


# -- without MPI ------------------------------------------------------------------------
def test_single_process_collectives_are_identities():
    comm = SingleProcess()
    a = [np.arange(3.0)]
    assert comm.allreduce_sum_(a) is a and comm.broadcast_(a) is a
    np.testing.assert_array_equal(a[0], [0.0, 1.0, 2.0])
    idx = np.arange(7)
    assert comm.shard(idx) is idx
    np.testing.assert_array_equal(comm.allreduce_sum([1, 2.5]), [1.0, 2.5])
    assert (comm.rank, comm.size, comm.is_root) == (0, 1, True)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 32, 33])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_contiguous_parts_cover_the_batch_in_order(n, size):
    parts = [range(*_contiguous_part(n, r, size)) for r in range(size)]
    assert [i for p in parts for i in p] == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("env, expected", [
    ({}, 0),
    ({"OMPI_COMM_WORLD_SIZE": "4", "PMIX_RANK": "0"}, 4),
    ({"PMI_SIZE": "2", "PMI_RANK": "1"}, 2),
    ({"MV2_COMM_WORLD_SIZE": "1"}, 1),
    ({"PMIX_RANK": "3"}, None),
    ({"OMPI_COMM_WORLD_SIZE": "", "PATH": "/bin"}, 0),
])
def test_launcher_size_reads_the_launcher_environment(env, expected):
    assert launcher_size(env) == expected


def _clean_env():
    env = {k: v for k, v in os.environ.items()
           if k not in distributed._SIZE_VARIABLES + distributed._RANK_VARIABLES}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_plain_run_never_imports_mpi4py():
    code = ("import sys; from grucy.distributed import get_communicator as g; "
            "c = g('auto'); print(type(c).__name__, 'mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(), text=True,
                         capture_output=True, timeout=TIMEOUT, check=True).stdout
    assert out.split() == ["SingleProcess", "False"]


def test_get_communicator_arguments(monkeypatch):
    for value in (False, None):
        assert isinstance(get_communicator(value), SingleProcess)
    mine = SingleProcess()
    assert get_communicator(mine) is mine
    with pytest.raises(ValueError, match="distributed must be"):
        get_communicator("yes")
    with pytest.raises(ValueError, match="distributed must be"):
        get_communicator(object())
    for name in distributed._SIZE_VARIABLES + distributed._RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert isinstance(get_communicator("auto"), SingleProcess)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")  # mpirun -n 1: nothing to do
    assert isinstance(get_communicator("auto"), SingleProcess)
    # a worker process a rank started (joblib, multiprocessing) inherits the launcher's
    # variables but is no rank (taken for one it crashed or hung in MPI)
    import multiprocessing
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())
    monkeypatch.setattr(distributed, "MPICommunicator",
                        lambda *a: pytest.fail("a worker process started MPI"))
    assert isinstance(get_communicator("auto"), SingleProcess)


def test_missing_mpi4py(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `import mpi4py` fail
    with pytest.raises(RuntimeError, match=r"grucy\[mpi\]"):
        get_communicator(True)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    with pytest.warns(RuntimeWarning, match="every rank trains alone"):
        comm = get_communicator("auto")
    assert isinstance(comm, SingleProcess)


def test_local_mpiexec_checks_its_arguments(monkeypatch):
    with pytest.raises(ValueError, match=r"^n must be a positive integer, got 0"):
        local_mpiexec(0)
    # int(n) made 2.5 two ranks, and 'two' a raw int() error
    with pytest.raises(TypeError, match=r"^n must be an integer, got float 2.5"):
        local_mpiexec(2.5)
    with pytest.raises(TypeError, match=r"^n must be an integer, got str 'two'"):
        local_mpiexec("two")
    with pytest.raises(ValueError, match="transport must be"):
        local_mpiexec(2, transport="infiniband")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match="no mpirun or mpiexec"):
        local_mpiexec(2)


# -- under mpirun ------------------------------------------------------------------------
def mpi_launcher(n):
    """The command prefix that starts ``n`` ranks on this machine, or skip."""
    importorskip("mpi4py")
    override = os.environ.get("GRUCY_TEST_MPIEXEC")
    if override:
        return shlex.split(override.format(n=n))
    try:
        return local_mpiexec(n)  # TCP over loopback: works in containers too
    except RuntimeError as exc:
        pytest.skip(str(exc))


def launch_env():
    return _clean_env()


def kill_session(sid):
    """SIGKILL every process of session ``sid`` (a launcher started with
    ``start_new_session``) and wait until none is left.

    Not ``os.killpg``: Open MPI's prterun puts each rank in a process group of its own,
    so killing the launcher's group left the ranks running as orphans; in CI the
    orphans of a "killed" run went on writing checkpoints while the resumed run read
    them, and the resumed ranks hung on different epochs.
    """
    if not os.path.isdir("/proc"):  # (not Linux: the group is the best we have)
        os.killpg(sid, signal.SIGKILL)
        return
    deadline = time.monotonic() + 30
    while True:
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:  # (it ended meanwhile)
                continue
            # fields after "(comm)": state ppid pgrp session ...
            fields = stat[stat.rindex(b")") + 2:].split()
            if int(fields[3]) == sid and fields[0] != b"Z":
                pids.append(int(entry))
        if not pids:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"processes {pids} of the launched job outlived SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def run(cmd, check=True):
    """Run ``cmd`` to completion in its own process group; fail with its output."""
    proc = subprocess.Popen(list(map(str, cmd)), env=launch_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_session(proc.pid)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{shlex.join(proc.args)} hung for {TIMEOUT} s:\n{stdout}\n{stderr}")
    if check:
        assert proc.returncode == 0, (f"{shlex.join(proc.args)} failed "
                                      f"({proc.returncode}):\n{stdout}\n{stderr}")
    return proc.returncode, stdout, stderr


def results(out, size):
    got = []
    for rank in range(size):
        _, config, arrays = read_archive(f"{out}.rank{rank}", kind="test-result")
        assert (config["rank"], config["size"]) == (rank, size)
        got.append((config, arrays))
    return got


def test_collectives_under_mpirun(tmp_path):
    out = tmp_path / "coll"
    run(mpi_launcher(2) + [sys.executable, WORKER, "collectives", str(out)])
    ranks = results(out, 2)
    for rank, (config, a) in enumerate(ranks):
        assert config["type"] == "MPICommunicator"
        for dt in ("float64", "float32"):
            assert a[f"sum_a_{dt}"].dtype == dt
            np.testing.assert_array_equal(a[f"sum_a_{dt}"], np.full((2, 3), 3.0))
            np.testing.assert_array_equal(a[f"sum_b_{dt}"], np.arange(5) * 3.0)
        np.testing.assert_array_equal(a["sum_again"], np.full(4, 3.0))
        np.testing.assert_array_equal(a["bcast_int"], [10, 10, 10])
        np.testing.assert_array_equal(a["bcast_f32"], np.full((2, 2), 0.25))
        expected_view = np.zeros((3, 4))
        expected_view[:, ::2] = 0.5
        np.testing.assert_array_equal(a["bcast_view"], expected_view)
        np.testing.assert_array_equal(a["small_sum"], [2.0, 1.0, 0.5])
        for n in (0, 1, 5, 8):
            lo, hi = _contiguous_part(n, rank, 2)
            np.testing.assert_array_equal(a[f"shard_{n}"], np.arange(lo, hi))
        assert "ranks [1] passed arrays of other shapes" in config["mismatch"]


SUNSPOTS = str(Path(grucy.datasets.__file__).with_name("sunspots.csv"))
# `grucy train` on the sunspot numbers, float64 (equivalence to 1e-10 needs it)
TRAIN = [sys.executable, "-m", "grucy", "train", "--csv", SUNSPOTS, "--dtype", "float64",
         "--hidden-size", "8", "--validation-fraction", "0.2", "--seed", "3", "--quiet"]


def fit_results(out, size):
    """Per-rank (config, weights, history) written by the worker's ``forecast``."""
    got = []
    for config, arrays in results(out, size):
        params = [arrays[f"p{i}"] for i in range(sum(k[1:].isdigit() for k in arrays))]
        history = {k[len("history_"):]: v for k, v in arrays.items()
                   if k.startswith("history_")}
        got.append((config, params, history))
    return got


def saved_model(path):
    model = grucy.load(path)
    return model.net_.parameters(), model.history_


def test_grucy_train_under_mpirun_matches_one_process(tmp_path):
    """``mpirun -n 2 grucy train`` ends where ``grucy train`` ends (float64, 1e-10).

    Same command, same seed and global batch size.  Through the whole stack: the CLI,
    Forecaster, the shared loop (broadcast, shards, one gradient allreduce per step,
    validation sums reduced), and rank 0 alone printing and saving.
    """
    one, two = tmp_path / "one.grucy", tmp_path / "two.grucy"
    args = ["--epochs", "4", "--lr", "0.01"]
    run(TRAIN + args + ["-o", one])
    _, stdout, _ = run(mpi_launcher(2) + TRAIN + args + ["-o", two])
    assert stdout.count("saved Forecaster") == 1  # rank 0 only
    w1, h1 = saved_model(one)
    w2, h2 = saved_model(two)
    assert set(h1) == {"loss", "val_loss", "val_rmse", "lr"}
    assert h1["loss"][-1] < 0.9 * h1["loss"][0]  # it trained
    for a, b in zip(w2, w1):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    for k in h1:
        np.testing.assert_allclose(h2[k], h1[k], rtol=1e-10, err_msg=k)


def test_every_model_under_mpirun_matches_one_process(tmp_path):
    """GRUClassifier, GRURegressor and CharLM (streams split 2/3 between the ranks)."""
    one, two = tmp_path / "one", tmp_path / "two"
    run([sys.executable, WORKER, "models", one, "--distributed", "0"])
    run(mpi_launcher(2) + [sys.executable, WORKER, "models", two])
    [(_, single)] = results(one, 1)
    (_, r0), (_, r1) = results(two, 2)
    assert {k.split("/")[0] for k in single} == {"classifier", "regressor", "charlm"}
    assert "charlm/history_val_bits_per_char" in single
    for k in single:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
        np.testing.assert_allclose(r0[k], single[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_ranks_agree_on_a_fresh_seed_and_hold_identical_weights(tmp_path):
    """random_state=None: each rank draws its own entropy; the model must use rank 0's."""
    out = tmp_path / "fresh"
    run(mpi_launcher(2) + [sys.executable, WORKER, "forecast", out, "--seed", "none",
                           "--dropout", "0.2", "--epochs", "2"])
    (c0, w0, h0), (c1, w1, h1) = fit_results(out, 2)
    assert c0["type"] == "MPICommunicator"
    assert c0["model_seed"] == c1["model_seed"]
    assert c0["loop_rng"] == c1["loop_rng"]
    for a, b in zip(w0, w1):  # Allreduce gives every rank the same sums
        np.testing.assert_array_equal(a, b)
    for k in h0:
        np.testing.assert_array_equal(h0[k], h1[k])


def kill_after_first_checkpoint(cmd, checkpoint):
    """Start ``cmd``, SIGKILL it (and every rank) once ``checkpoint`` exists."""
    proc = subprocess.Popen(list(map(str, cmd)), env=launch_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    try:
        while not checkpoint.exists():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"the run ended before its first checkpoint ({proc.returncode})"
                            f":\n{out}\n{err}")
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint after {TIMEOUT} s")
            time.sleep(0.002)
    finally:
        kill_session(proc.pid)
        proc.communicate()
    return proc.returncode


EPOCHS = 20


def killed_and_resumed(cmd, checkpoint, resume_args):
    """Kill ``cmd`` after its first checkpoint, then run it again with ``resume_args``."""
    code = kill_after_first_checkpoint(cmd, checkpoint)
    assert code != 0  # it was killed, not finished
    epoch = read_archive(checkpoint)[1]["epoch"]
    assert 1 <= epoch < EPOCHS
    run(cmd + resume_args)
    return epoch


def test_fit_resumes_a_killed_run_bit_for_bit(tmp_path):
    """Forecaster.fit(..., resume=path) in a new process after SIGKILL mid-training.

    With dropout, so the random streams (shuffling and masks) must come back too.
    """
    common = ["--epochs", str(EPOCHS), "--dropout", "0.2"]
    full, broken, checkpoint = tmp_path / "full", tmp_path / "broken", tmp_path / "c.ckpt"
    run([sys.executable, WORKER, "forecast", full] + common)
    cmd = [sys.executable, WORKER, "forecast", broken, "--checkpoint", checkpoint] + common
    killed_and_resumed(cmd, checkpoint, ["--resume", checkpoint])
    [(_, w_full, h_full)] = fit_results(full, 1)
    [(config, w_res, h_res)] = fit_results(broken, 1)
    assert config["epoch"] == EPOCHS
    for a, b in zip(w_res, w_full):
        np.testing.assert_array_equal(a, b)
    for k in h_full:
        np.testing.assert_array_equal(h_res[k], h_full[k], err_msg=k)


def test_grucy_train_resume_under_mpirun_bit_for_bit(tmp_path):
    """``mpirun -n 2 grucy train --resume``: a killed 2-rank run ends exactly as an
    unbroken 2-rank run (per-rank dropout streams included)."""
    mpirun = mpi_launcher(2)
    # 25 per batch: shards of 12 and 13, so the ranks draw different numbers of dropout
    # masks and rank 1's streams cannot be rebuilt from rank 0's saved state.
    common = ["--epochs", str(EPOCHS), "--dropout", "0.2", "--batch-size", "25"]
    full, resumed = tmp_path / "full.grucy", tmp_path / "resumed.grucy"
    checkpoint = tmp_path / "run.ckpt"
    run(mpirun + TRAIN + common + ["-o", full])
    cmd = mpirun + TRAIN + common + ["-o", resumed, "--checkpoint", checkpoint]
    killed_and_resumed(cmd, checkpoint, ["--resume", checkpoint])
    w_full, h_full = saved_model(full)
    w_res, h_res = saved_model(resumed)
    for a, b in zip(w_res, w_full):
        np.testing.assert_array_equal(a, b)
    assert h_res == h_full


def test_ranks_that_read_different_checkpoints_fail_together(tmp_path):
    """A checkpoint that changed between the ranks' reads: a clear error, not a hang
    (rank 0 would restore epoch 1, rank 1 epoch 2 and wait for it after its last epoch)."""
    mpirun = mpi_launcher(2)
    out, every = tmp_path / "fit", tmp_path / "c{epoch}.ckpt"
    run(mpirun + [sys.executable, WORKER, "forecast", out, "--epochs", "2",
                  "--checkpoint", every])
    for rank in (0, 1):
        shutil.copyfile(tmp_path / f"c{rank + 1}.ckpt", tmp_path / f"r{rank}.ckpt")
    code, _, stderr = run(mpirun + [sys.executable, WORKER, "forecast", out, "--epochs",
                                    "4", "--resume", tmp_path / "r{rank}.ckpt"],
                          check=False)
    assert code != 0
    assert "1 of 2 ranks read another checkpoint than rank 0" in stderr, stderr


def test_an_exception_on_one_rank_ends_the_job(tmp_path):
    """Without the abort hook rank 0 would wait in its allreduce until the timeout."""
    out = tmp_path / "fail"
    code, _, stderr = run(mpi_launcher(2) + [sys.executable, WORKER, "fail", str(out)],
                          check=False)
    assert code != 0
    assert "deliberate failure on rank 1" in stderr
    assert not Path(f"{out}.rank0").exists()


def test_a_cli_error_on_one_rank_ends_the_job(tmp_path):
    """grucy train checks its output paths on rank 0 only; rank 0 used to exit with its
    one-line error and wait in MPI's shutdown, rank 1 in its first collective."""
    csv = tmp_path / "s.csv"
    csv.write_text("value\n" + "".join(f"{np.sin(i / 3):.5f}\n" for i in range(60)))
    code, _, stderr = run(mpi_launcher(2) + [sys.executable, "-m", "grucy", "train",
                                             "--csv", csv, "--epochs", "1", "-q", "-o",
                                             tmp_path / "nodir" / "m.grucy"], check=False)
    assert code == 2, stderr
    assert "grucy train: error: --output" in stderr and "does not exist" in stderr


RANK_DATA = """
import numpy as np, grucy
from grucy.distributed import get_communicator
rank = get_communicator("auto").rank
X = np.random.default_rng(rank).normal(size=(13, 6, 2))   # other data on each rank
grucy.GRURegressor(hidden_size=4, epochs=2, random_state=0).fit(X, X[:, :, 0].sum(1))
"""


def test_ranks_given_different_data_fail_together():
    """They trained silently into different models (or died in a bare MPI_ERR_TRUNCATE
    when the row counts differed)."""
    code, _, stderr = run(mpi_launcher(2) + [sys.executable, "-c", RANK_DATA], check=False)
    assert code != 0
    assert "the ranks hold different training data (1 of 2 differ from rank 0's)" in stderr


WORKER_PROCESS = """
import multiprocessing as mp
from grucy.distributed import get_communicator
def kind(_):
    return type(get_communicator("auto")).__name__
with mp.get_context("fork").Pool(1) as pool:   # before this rank starts MPI
    child = pool.map(kind, [0])[0]
print(kind(0), child, flush=True)
"""


def test_a_ranks_worker_processes_are_no_ranks():
    _, out, _ = run(mpi_launcher(2) + [sys.executable, "-c", WORKER_PROCESS])
    assert out.split() == ["MPICommunicator", "SingleProcess"] * 2, out
