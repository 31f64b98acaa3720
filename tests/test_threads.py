"""Threads: the kernels release the GIL, several layers in several threads compute exactly
what they compute one after another, and one layer used from two threads at once is
refused with a clear RuntimeError (never wrong numbers, never a deadlock).

Speed of the overlap is measured in bench/bench_threads.py, not asserted here.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

import grucy
from grucy import reference
from grucy.nn import Linear

from conftest import assert_results_equal, make_inputs, run_layer

PYX = Path(grucy.__file__).with_name("_gru.pyx")


# -- the GIL is released around every kernel ----------------------------------------------
def _signature(lines, i):
    """The (possibly multi-line) signature starting at line i, up to its colon."""
    text = ""
    for line in lines[i:]:
        text += line
        if line.rstrip().endswith(":"):
            return text
    return text


def _kernel_functions(source):
    """Names of the non-inline ``cdef void ... nogil`` functions and methods: the loops
    over time steps (and row gathers) that do the heavy work."""
    lines = source.splitlines()
    names = set()
    for i, line in enumerate(lines):
        m = re.match(r"^\s*cdef\s+void\s+(\w+)\s*\(", line)
        if m and "nogil" in _signature(lines, i):
            names.add(m.group(1))
    return names


def _calls_holding_the_gil(source, names):
    """(line number, text) of calls to ``names`` that can run with the GIL held: reached
    from a ``def`` without passing a ``with nogil:`` block or a nogil function."""
    lines = source.splitlines()
    bad = []
    for i, line in enumerate(lines):
        if not any(re.search(rf"\b{n}\s*\(", line) for n in names):
            continue
        if re.match(r"^\s*cdef\s", line):
            continue  # the definition itself
        indent = len(line) - len(line.lstrip())
        verdict = "bad"
        for j in range(i - 1, -1, -1):
            prev = lines[j]
            if not prev.strip() or prev.lstrip().startswith("#"):
                continue
            pind = len(prev) - len(prev.lstrip())
            if pind >= indent:
                continue
            indent = pind
            head = prev.strip()
            if head == "with nogil:":
                verdict = "ok"
                break
            if head.startswith(("cdef ", "cpdef ")) and "nogil" in _signature(lines, j):
                verdict = "ok"
                break
            if head.startswith("def ") or pind == 0:
                break
        if verdict == "bad":
            bad.append((i + 1, line.strip()))
    return bad


def test_every_kernel_call_releases_the_gil():
    source = PYX.read_text()
    names = _kernel_functions(source)
    assert {"_fwd_run", "_bwd_run", "_make_plan"} <= names, names
    assert _calls_holding_the_gil(source, names) == []
    # ... and the checker itself finds calls that hold the GIL.
    fake = ("cdef void _k(int n) noexcept nogil:\n    pass\n"
            "def f():\n    x = 1\n    _k(1)\n    with nogil:\n        _k(2)\n"
            "class C:\n    def g(self):\n        if True:\n            _k(3)\n")
    assert _kernel_functions(fake) == {"_k"}
    assert _calls_holding_the_gil(fake, {"_k"}) == [(5, "_k(1)"), (11, "_k(3)")]


# -- several layers, several threads: exactly the sequential results -----------------------
def _workloads(rng):
    configs = [
        dict(input_size=16, hidden_size=96, dtype=np.float32),
        dict(input_size=8, hidden_size=64, num_layers=2, bidirectional=True,
             dtype=np.float64),
        dict(input_size=12, hidden_size=80, reset_after=False, dtype=np.float32,
             batch_first=True),
        dict(input_size=5, hidden_size=48, num_layers=2, dropout=0.3, dtype=np.float64),
    ]
    work = []
    for k, cfg in enumerate(configs):
        layer = grucy.GRU(seed=k, **cfg)
        batches = [make_inputs(rng, layer, T=12, B=8, lengths=bool(j % 2)) for j in range(2)]
        work.append((cfg, k, batches))
    return work


def _run_all(cfg, seed, batches):
    layer = grucy.GRU(seed=seed, **cfg)  # a fresh layer: same weights, same dropout masks
    return [run_layer(layer, b) for b in batches]


@pytest.fixture
def thread_limits():
    """Set grucy's kernel threads and BLAS threads for one test; restore afterwards."""
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="test extra")
    before = grucy.get_num_threads()
    with contextlib.ExitStack() as stack:
        def set_limits(omp, blas):
            grucy.set_num_threads(omp)
            stack.enter_context(threadpoolctl.threadpool_limits(blas, user_api="blas"))
        yield set_limits
    grucy.set_num_threads(before)


def _in_threads(functions):
    """Run each function in its own thread, all released at once; results or errors."""
    results = [None] * len(functions)
    errors = []
    start = threading.Barrier(len(functions))

    def target(i):
        try:
            start.wait()
            results[i] = functions[i]()
        except BaseException as exc:  # reported by the caller, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(len(functions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


@pytest.mark.parametrize("omp_threads, blas_threads", [(1, 1), (2, 1), (2, None)],
                         ids=["omp1-blas1", "omp2-blas1", "omp2-blas_default"])
def test_layers_in_parallel_threads_match_sequential_bitwise(omp_threads, blas_threads,
                                                             thread_limits, rng):
    """BLAS default threads included: concurrent calls into OpenBLAS from several
    threads must be safe too (slow on a loaded 2-core machine, hence small sizes)."""
    thread_limits(omp_threads, blas_threads)
    work = _workloads(rng)
    expected = [_run_all(*w) for w in work]
    results, errors = _in_threads([lambda w=w: [_run_all(*w) for _ in range(2)][-1]
                                   for w in work])
    assert not errors, errors
    for i, (got, want) in enumerate(zip(results, expected)):
        for j, (g, w) in enumerate(zip(got, want)):
            try:
                assert_results_equal(g, w)
            except AssertionError as exc:
                raise AssertionError(f"layer {i}, batch {j}: {exc}") from None


@pytest.mark.parametrize("omp_threads", [1, 2])
def test_streams_of_one_layer_in_parallel_threads_match_sequential(omp_threads,
                                                                    thread_limits, rng):
    """Streams share their layer's parameters (read only) and own their state: several
    streams of one layer stepped from several threads give the sequential results."""
    thread_limits(omp_threads, 1)
    layer = grucy.GRU(6, 48, num_layers=2, dtype=np.float32, seed=0)
    xs = [rng.standard_normal((200, 3, 6)).astype(np.float32) for _ in range(3)]

    def run(x):
        s = layer.stream(3)
        return np.stack([s.step(x_t) for x_t in x]), s.h

    expected = [run(x) for x in xs]
    results, errors = _in_threads([lambda x=x: run(x) for x in xs])
    assert not errors, errors
    for (y, h), (y_want, h_want) in zip(results, expected):
        np.testing.assert_array_equal(y, y_want)
        np.testing.assert_array_equal(h, h_want)


# -- one layer, two threads: refused, never corrupted -------------------------------------
class BlockingArray:
    """An array-like whose conversion waits: holds a forward inside the layer until told."""

    def __init__(self, value):
        self.value = value
        self.entered = threading.Event()
        self.release = threading.Event()

    def __array__(self, dtype=None, copy=None):
        self.entered.set()
        assert self.release.wait(30), "test timed out"
        return self.value


def _hold_inside(method, *args, **kwargs):
    """Start ``method`` in a thread with ``args[0]`` a BlockingArray; return (thread, box)."""
    box = {}

    def target():
        try:
            box["result"] = method(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    assert args[0].entered.wait(30), "the held call never started"
    return t, box


@pytest.mark.parametrize("cls", [grucy.GRU, reference.GRU], ids=["compiled", "reference"])
def test_second_thread_on_a_busy_layer_is_refused(cls, rng):
    layer = cls(3, 5, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    inputs = make_inputs(rng, layer, T=4, B=2)
    expected = run_layer(cls(3, 5, num_layers=2, bidirectional=True, dtype=np.float64,
                             seed=0), inputs)

    held = BlockingArray(inputs["x"])
    t, box = _hold_inside(layer.forward, held, inputs["h0"])
    with pytest.raises(RuntimeError, match="in use by another thread"):
        layer.forward(inputs["x"], inputs["h0"])
    with pytest.raises(RuntimeError, match="in use by another thread"):
        layer.backward(inputs["dy"], inputs["dh_n"])
    held.release.set()
    t.join()
    assert "error" not in box, box
    np.testing.assert_array_equal(box["result"][0], expected["y"])

    # The same while a backward is held inside.
    held = BlockingArray(inputs["dy"])
    layer.zero_grad()
    t, box = _hold_inside(lambda dy: (layer.forward(inputs["x"], inputs["h0"]),
                                      layer.backward(dy, inputs["dh_n"]))[1], held)
    with pytest.raises(RuntimeError, match="in use by another thread"):
        layer.forward(inputs["x"], training=False)
    held.release.set()
    t.join()
    assert "error" not in box, box
    np.testing.assert_array_equal(box["result"][0], expected["dx"])
    for k, g in expected["grads"].items():
        np.testing.assert_array_equal(layer.grads[k], g, err_msg=k)

    # Writing the parameters or zeroing the gradients mid-call is refused too.
    held = BlockingArray(inputs["x"])
    t, box = _hold_inside(layer.forward, held, inputs["h0"], training=False)
    with pytest.raises(RuntimeError, match="in use by another thread"):
        layer.load_state_dict(layer.state_dict())
    with pytest.raises(RuntimeError, match="in use by another thread"):
        layer.zero_grad()
    held.release.set()
    t.join()
    np.testing.assert_array_equal(box["result"][0], expected["y"])

    # Free again: this thread may use it.
    assert_results_equal(run_layer(layer, inputs), expected)


def test_linear_refuses_a_second_thread_too(rng):
    lin = Linear(3, 2, dtype=np.float64, seed=0)
    x = rng.standard_normal((4, 3))
    held = BlockingArray(x)
    t, box = _hold_inside(lin.forward, held)
    with pytest.raises(RuntimeError, match="in use by another thread"):
        lin.forward(x)
    held.release.set()
    t.join()
    np.testing.assert_array_equal(box["result"], x @ lin.weight.T + lin.parameters()[1])


@pytest.mark.parametrize("cls", [grucy.GRU, reference.GRU, Linear],
                         ids=["compiled", "reference", "Linear"])
def test_backward_in_another_thread_than_its_forward_is_refused(cls, rng):
    if cls is Linear:
        layer = Linear(3, 2, dtype=np.float64, seed=0)
        x, dy = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    else:
        layer = cls(3, 4, dtype=np.float64, seed=0)
        inputs = make_inputs(rng, layer, T=3, B=2)
        x, dy = inputs["x"], inputs["dy"]
    layer.forward(x)
    box = {}

    def other():
        try:
            layer.backward(dy)
        except RuntimeError as exc:
            box["error"] = str(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert "another thread" in box.get("error", ""), box
    layer.backward(dy)  # the forward's own thread still can


def test_hammering_one_layer_from_two_threads_never_gives_wrong_numbers(rng):
    """Two threads race forward+backward pairs on one layer.  Every call either raises
    RuntimeError or returns exactly what a private layer returns for the same input."""
    cfg = dict(input_size=4, hidden_size=32, num_layers=2, dtype=np.float64, seed=0)
    layer = grucy.GRU(**cfg)
    inputs = [make_inputs(rng, layer, T=30, B=8) for _ in range(2)]
    expected = [run_layer(grucy.GRU(**cfg), inp) for inp in inputs]
    counts = [dict(ok=0, refused=0) for _ in inputs]
    problems = []
    start = threading.Barrier(2)

    def target(i):
        inp, want = inputs[i], expected[i]
        start.wait()
        for _ in range(60):
            try:
                y, h_n = layer.forward(inp["x"], inp["h0"])
                dx, dh0 = layer.backward(inp["dy"], inp["dh_n"])
            except RuntimeError as exc:
                if "another thread" not in str(exc) and "forward" not in str(exc):
                    problems.append(repr(exc))
                counts[i]["refused"] += 1
                continue
            except BaseException as exc:
                problems.append(repr(exc))
                return
            for name, got in (("y", y), ("h_n", h_n), ("dx", dx), ("dh0", dh0)):
                if not np.array_equal(got, want[name]):
                    problems.append(f"thread {i}: wrong {name}")
            counts[i]["ok"] += 1

    threads = [threading.Thread(target=target, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not problems, problems[:5]
    assert sum(c["ok"] for c in counts) > 0, counts


def test_default_threads_share_the_cores_among_local_mpi_ranks():
    from grucy._threads import default_threads_for_local_ranks as threads

    assert threads({}, cpus=8, allowed=8) is None  # no launcher: OMP_NUM_THREADS or the CPUs
    assert threads({"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, cpus=2, allowed=2) == 1
    assert threads({"PMI_LOCAL_SIZE": "3"}, cpus=8, allowed=8) == 2
    assert threads({"MPI_LOCALNRANKS": "16"}, cpus=8, allowed=8) == 1
    assert threads({"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, cpus=16, allowed=4) == 4  # bound
    assert threads({"OMPI_COMM_WORLD_LOCAL_SIZE": "2", "OMP_NUM_THREADS": "2"},
                   cpus=2, allowed=2) is None  # the user's choice wins
    assert threads({"OMPI_COMM_WORLD_LOCAL_SIZE": "x"}, cpus=2, allowed=2) is None


# -- the building blocks: the same policy as the layers -----------------------------------
def _blocks():
    """(name, make(), input, dy, expected (y, dx)) for Embedding, Dropout, Sequential."""
    from grucy.nn import Dropout, Embedding, Sequential

    rng = np.random.default_rng(11)
    idx = rng.integers(0, 7, size=(4, 3))
    x = rng.standard_normal((4, 3))
    cases = []

    def emb():
        return Embedding(7, 2, dtype=np.float64, seed=0)

    e = emb()
    dy_e = rng.standard_normal((4, 3, 2))
    cases.append(("Embedding", emb, idx, dy_e, (e.forward(idx), e.backward(dy_e))))

    def drop():
        return Dropout(0.4, seed=3)

    d = drop()
    dy_d = rng.standard_normal((4, 3))
    cases.append(("Dropout", drop, x, dy_d, (d.forward(x), d.backward(dy_d))))

    def seq():
        return Sequential(Linear(3, 5, dtype=np.float64, seed=1), Dropout(0.3, seed=2),
                          Linear(5, 2, dtype=np.float64, seed=4))

    s = seq()
    dy_s = rng.standard_normal((4, 2))
    cases.append(("Sequential", seq, x, dy_s, (s.forward(x), s.backward(dy_s))))
    return cases


BLOCKS = _blocks()


@pytest.mark.parametrize("name, make, inp, dy, expected", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_a_busy_building_block_refuses_a_second_thread(name, make, inp, dy, expected):
    obj = make()
    held = BlockingArray(inp)
    t, box = _hold_inside(obj.forward, held)
    with pytest.raises(RuntimeError, match="in use by another thread"):
        obj.forward(inp)
    with pytest.raises(RuntimeError, match="in use by another thread"):
        obj.backward(dy)
    with pytest.raises(RuntimeError, match="in use by another thread"):
        obj.zero_grad()
    held.release.set()
    t.join()
    assert "error" not in box, box
    np.testing.assert_array_equal(box["result"], expected[0])
    # the held forward is the one the backward of its thread would use: here, this
    # thread never ran a forward of its own
    with pytest.raises(RuntimeError, match="another thread|forward"):
        obj.backward(dy)
    # free again, the object gives exactly the sequential numbers
    fresh = make()
    y = fresh.forward(inp)
    np.testing.assert_array_equal(y, expected[0])
    got = fresh.backward(dy)
    if expected[1] is None:
        assert got is None
    else:
        np.testing.assert_array_equal(got, expected[1])


@pytest.mark.parametrize("name, make, inp, dy, expected", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_building_block_backward_in_another_thread_is_refused(name, make, inp, dy, expected):
    obj = make()
    obj.forward(inp)
    box = {}

    def other():
        try:
            obj.backward(dy)
        except RuntimeError as exc:
            box["error"] = str(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert "another thread" in box.get("error", ""), box
    got = obj.backward(dy)  # the forward's own thread still can, with its own state
    if expected[1] is not None:
        np.testing.assert_array_equal(got, expected[1])


def test_hammering_shared_building_blocks_never_mixes_their_state():
    """Two threads race forward+backward pairs on one Embedding, one Dropout and one
    Sequential.  Every pair is either refused (RuntimeError) or exact: the Embedding's
    gradient rows and the Linear layers' numbers equal a private object's, and each
    Dropout backward uses the mask of its own thread's forward (dx = dy * y for x = 1)."""
    from grucy.nn import Dropout, Embedding, Sequential

    rng = np.random.default_rng(12)
    emb = Embedding(50, 4, dtype=np.float64, seed=0)
    drop = Dropout(0.5, seed=1)
    seq = Sequential(Linear(6, 8, dtype=np.float64, seed=2),
                     Linear(8, 3, dtype=np.float64, seed=3))
    twin = Sequential(Linear(6, 8, dtype=np.float64, seed=2),
                      Linear(8, 3, dtype=np.float64, seed=3))
    data = []
    for _ in range(2):
        idx = rng.integers(0, 50, size=(16, 8))
        x = rng.standard_normal((64, 6))
        dy = rng.standard_normal((64, 3))
        y_want = twin.forward(x)
        dx_want = twin.backward(dy)
        data.append((idx, x, dy, y_want, dx_want))
    problems, counts = [], {"ok": 0, "refused": 0}
    start = threading.Barrier(2)

    def target(i):
        idx, x, dy, y_want, dx_want = data[i]
        ones = np.ones((64, 32))
        start.wait()
        for _ in range(150):
            try:
                rows = emb.forward(idx)
                if not np.array_equal(rows, emb.weight[idx]):
                    problems.append(f"thread {i}: wrong embedding rows")
                emb.backward(np.zeros(idx.shape + (4,)))
                y = drop.forward(ones)
                dx = drop.backward(ones * 3)
                if not np.array_equal(dx, 3 * y):
                    problems.append(f"thread {i}: dropout backward used another mask")
                if not np.array_equal(seq.forward(x), y_want):
                    problems.append(f"thread {i}: wrong Sequential output")
                if not np.array_equal(seq.backward(dy), dx_want):
                    problems.append(f"thread {i}: wrong Sequential dx")
                counts["ok"] += 1
            except RuntimeError as exc:
                if "another thread" not in str(exc) and "forward" not in str(exc):
                    problems.append(repr(exc))
                counts["refused"] += 1
            except BaseException as exc:
                problems.append(repr(exc))
                return

    threads = [threading.Thread(target=target, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not problems, problems[:5]
    assert counts["ok"] > 0, counts


def test_losses_are_pure_functions_safe_from_many_threads():
    from grucy import losses

    rng = np.random.default_rng(13)
    inputs = [(rng.standard_normal((64, 10, 7)), rng.integers(0, 7, (64, 10)),
               rng.random((64, 10)) > 0.2) for _ in range(4)]
    expected = [losses.cross_entropy_loss(z, t, m) for z, t, m in inputs]
    expected_mse = [losses.huber_loss(z, z[::-1], delta=0.5) for z, _, _ in inputs]
    problems = []
    start = threading.Barrier(4)

    def target(i):
        z, t, m = inputs[i]
        start.wait()
        for _ in range(40):
            loss, grad = losses.cross_entropy_loss(z, t, m)
            if loss != expected[i][0] or not np.array_equal(grad, expected[i][1]):
                problems.append(i)
            loss, grad = losses.huber_loss(z, z[::-1], delta=0.5)
            if loss != expected_mse[i][0] or not np.array_equal(grad, expected_mse[i][1]):
                problems.append(i)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not problems


# -- fork, and the thread team's lasting state ---------------------------------------------
def _fork_child_script():
    return r'''
import os, sys, json
import numpy as np
import grucy

grucy.set_num_threads(2)
g = grucy.GRU(24, 128, seed=0)          # large enough for a 2-thread team
rng = np.random.default_rng(0)
x = rng.standard_normal((20, 32, 24)).astype(np.float32)
want = g(x, training=False)[0]
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    # the child: the parent's workers do not exist here; it must run, single-threaded
    # until told otherwise, and give the same numbers
    os.close(r)
    out = {"threads": grucy.get_num_threads(),
           "same": bool(np.array_equal(g(x, training=False)[0], want))}
    grucy.set_num_threads(2)
    out["same_2"] = bool(np.array_equal(g(x, training=False)[0], want))
    out["workers"] = grucy._gru._pool_workers()
    os.write(w, json.dumps(out).encode())
    os._exit(0)
os.close(w)
_, status = os.waitpid(pid, 0)
print(os.read(r, 1000).decode(), status)
'''


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_after_a_threaded_call_runs_and_can_use_threads(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", _fork_child_script()], text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line, status = proc.stdout.strip().rsplit(" ", 1)
    out = __import__("json").loads(line)
    assert status == "0"
    assert out == {"threads": 1, "same": True, "same_2": True, "workers": 1}


def test_omp_num_threads_is_bounded_as_the_setter_is():
    # OMP_NUM_THREADS=100000 used to start ~950 workers for one call on a 2-core box
    # (60x slower); the environment default now has set_num_threads's bound.
    import subprocess
    import sys
    code = "import grucy, grucy._threads as t; print(grucy.get_num_threads(), t.MAX_THREADS)"
    for value, want in [("100000", None), ("3", 3)]:
        env = {**os.environ, "OMP_NUM_THREADS": value}
        proc = subprocess.run([sys.executable, "-c", code], text=True, env=env,
                              capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        got, bound = map(int, proc.stdout.split())
        assert got == (bound if want is None else want)
        assert bound == max(64, 4 * (os.cpu_count() or 1))
