"""The benchmark harness (grucy.benchmark) runs end to end on tiny shapes.

These tests never look at times: they check that every case runs, that the JSON report
has its structure, that each installed peer agreed with grucy before it was timed, and
that a peer returning wrong numbers is caught and left untimed.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from grucy import benchmark
from grucy import _bench_peers as bp

from conftest import importorskip

TINY = [
    "--quick", "--shapes", "3x6x4x5", "--extra-shape", "2x5x3x4",
    "--stream-size", "4x5", "--gemm-size", "64", "--target-seconds", "0.01",
    "--min-repeats", "2", "--peers", "torch,onnxruntime,numpy,keras-tf",
]


def _installed(*modules):
    return all(importlib.util.find_spec(m) is not None for m in modules)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One full tiny run (every case); returns (exit status, JSON document, stdout)."""
    out = tmp_path_factory.mktemp("bench")
    path = out / "bench.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = benchmark.main(TINY + ["--json", str(path), "--markdown",
                                        str(out / "table.md"), "--plot", str(out / "s.png")])
    with open(path) as f:
        doc = json.load(f)
    return status, doc, buf.getvalue(), out


def test_full_run_succeeds_and_reports_every_case(report):
    status, doc, text, _ = report
    assert status == 0, doc["failures"]
    assert doc["failures"] == []
    kinds = {(r["kind"], r["mode"]) for r in doc["results"]}
    assert kinds == {(k, m) for k in ("core", "bidir", "float64", "varlen")
                     for m in ("train", "infer")}
    assert [r["label"] for r in doc["results"] if r["kind"] == "train"
            or r["mode"] == "train"] == ["3x6x4x5", "2x5x3x4 L2 bidir", "2x5x3x4 float64",
                                         "2x5x3x4 len~2.5"]
    for key in ("machine", "gemm", "peers", "scaling", "streaming", "memory", "targets"):
        assert key in doc
    assert doc["gemm"]["float32"]["n"] == 64
    assert {"float32", "float64"} <= set(doc["gemm"])
    for heading in ("Training step", "Inference", "Variable lengths", "Streaming",
                    "Peak memory", "Targets (issue 3)"):
        assert heading in text


def test_every_available_peer_was_checked_then_timed(report):
    _, doc, _, _ = report
    expect = {"torch": _installed("torch"),
              "onnxruntime": _installed("onnx", "onnxruntime"),
              "numpy": True, "keras-tf": _installed("keras", "tensorflow")}
    for name, available in expect.items():
        assert doc["peers"][name]["available"] == available, doc["peers"][name]
    for row in doc["results"]:
        grucy = row["impls"]["grucy"]
        assert grucy["status"] == "ok" and grucy["repeats"] >= 2
        assert grucy["ms_min"] <= grucy["ms_median"]
        assert len(grucy["ms_all"]) == grucy["repeats"]
        for name, res in row["impls"].items():
            if name == "grucy":
                continue
            if res["status"] == "ok":
                tol = benchmark.CHECK_TOL[np.dtype(row["dtype"])]
                assert res["max_rel_diff"] <= tol
                assert res["repeats"] >= 2 and len(res["ms_all"]) == res["repeats"]
                assert row["speedup"][name] == pytest.approx(res["ms_min"] / grucy["ms_min"])
            else:
                assert res["status"] == "unsupported", (name, row["label"], res)
        for name in ("torch", "numpy"):
            if expect[name]:
                assert row["impls"][name]["status"] == "ok", (name, row["label"])
        ort = row["impls"].get("onnxruntime")
        if row["mode"] == "train" or not expect["onnxruntime"]:
            assert ort is None
        elif row["dtype"] == "float64":
            # ONNX Runtime's GRU has no float64 kernel: reported, not faked.
            assert ort["status"] == "unsupported" and "float64" in ort["detail"]
        else:
            assert ort["status"] == "ok", row["label"]


def test_side_cases_have_their_figures(report):
    _, doc, _, out = report
    for v in doc["varlen"]:
        lengths = np.array(v["lengths"])
        assert lengths.min() >= 1 and lengths.max() <= v["T"]
        assert abs(lengths.mean() - v["T"] / 2) <= 0.5
        assert v["ratio"]["grucy"] > 0
    st = doc["streaming"]
    assert st["impls"]["grucy forward(T=1)"]["status"] == "ok"
    for name, res in st["impls"].items():
        assert res["status"] == "ok", (name, res)
        assert 0 < res["us_min"] <= res["us_median"]
    has_stream = hasattr(bp.SUBJECT.layer_class(), "stream")
    assert ("grucy stream.step" in st["impls"]) == has_stream
    sc = doc["scaling"]
    if "skipped" not in sc:
        assert [s["label"] for s in sc["shapes"]] == ["3x6x4x5"]
        for s in sc["shapes"]:
            assert s["impls"]["grucy"]["speedup"] > 0
    for row in doc["memory"]["shapes"]:
        for name, res in row["impls"].items():
            assert "error" not in res, (name, res)
            assert res["rss_peak_mib"] >= 0
    names = [t["name"] for t in doc["targets"]]
    assert names == ["train_vs_fastest", "train_geomean_torch", "infer_vs_onnxruntime",
                     "train_pct_sgemm", "thread_scaling", "varlen_cost",
                     "memory_vs_torch", "stream_overhead_us"]
    for t in doc["targets"]:
        assert t["status"] in ("met", "missed", "not measured")
        assert (t["measured"] is None) == (t["status"] == "not measured")
    md = (out / "table.md").read_text()
    assert md.count("\n| 3x6x4x5 |") == 1 and "| target (issue 3) |" in md
    if _installed("matplotlib"):
        assert (out / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_wrong_peer_is_caught_and_not_timed(tmp_path, monkeypatch, capsys):
    real = bp.NumpyPeer.train_outputs

    def wrong(self):
        out = real(self)
        out["grad:weight_hh_l0"] = out["grad:weight_hh_l0"] * 1.01
        return out

    monkeypatch.setattr(bp.NumpyPeer, "train_outputs", wrong)
    status = benchmark.main(TINY + ["--cases", "core", "--peers",
                                    "numpy", "--json", str(tmp_path / "b.json")])
    assert status == 1
    doc = json.loads((tmp_path / "b.json").read_text())
    train = [r for r in doc["results"] if r["mode"] == "train"][0]
    res = train["impls"]["numpy"]
    assert res["status"] == "mismatch" and "grad:weight_hh_l0" in res["detail"]
    assert "ms_min" not in res and "numpy" not in train["speedup"]
    infer = [r for r in doc["results"] if r["mode"] == "infer"][0]
    assert infer["impls"]["numpy"]["status"] == "ok"
    assert "CHECK FAILURES" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [["--shapes", "0x1x1x1"], ["--shapes", "9"],
                                 ["--peers", "tensorflow"], ["--cases", "core,speed"],
                                 ["--threads", "0"], ["--stream-size", "4x5x6"]])
def test_bad_options_are_refused(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        benchmark.main(bad)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_onnx_model_matches_grucy_with_two_bidirectional_layers_and_lengths():
    importorskip("onnxruntime")
    prob = bp.Problem(3, 6, 4, 5, layers=2, bidirectional=True, lengths=[6, 2, 4])
    ort = bp.OnnxRuntimePeer(prob, 1).infer_outputs()
    ref = bp.GrucyPeer(prob, 1).infer_outputs()
    np.testing.assert_allclose(ort["y"], ref["y"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ort["h_n"], ref["h_n"], rtol=1e-5, atol=1e-6)
    assert np.all(ort["y"][2:, 1] == 0)  # past the end of the length-2 sequence


def test_profile_mode_reports_every_piece(tmp_path, capsys):
    from grucy import _gru

    path = tmp_path / "p.json"
    status = benchmark.main(["--profile", "--quick", "--shapes", "3x6x4x5", "--gemm-size",
                             "64", "--target-seconds", "0.01", "--min-repeats", "2",
                             "--json", str(path)])
    assert status == 0
    doc = json.loads(path.read_text())
    (shape,) = doc["shapes"]
    assert shape["label"] == "3x6x4x5" and shape["notes"] == []
    # T = 6 >= 4 steps: the serial kernels run the packed recurrent GEMM when they can.
    packed = _gru.packed_gemm_enabled()
    assert shape["packed"] == packed and not shape["chunked"]
    pieces = {k.strip(): v for k, v in shape["pieces"].items()}
    names = ["training step (layer API)", "kernel calls (_gru.forward + backward)",
             "recurrent GEMM, forward", "recurrent GEMM, backward",
             "hoisted GEMM, forward (X W_ih^T)", "hoisted GEMM, backward dW_ih",
             "hoisted GEMM, backward dW_hh", "hoisted GEMM, backward dX",
             "bias gradient sums (GEMV), backward",
             "(not in the step: allocation + first touch of the kernel buffers)",
             "rest: fused passes, copies, barriers, imbalance"]
    names.append("weight gradients: second half added (memory-bound)")
    if packed:
        names.append("W_hh + W_ih packing (forward + backward)")
    for name in names:
        assert np.isfinite(pieces[name]["ms"]), name
    assert "W_hh regroup copy (chunked BLAS path)" not in pieces
    for name in ("recurrent GEMM, forward", "recurrent GEMM, backward",
                 "hoisted GEMM, forward (X W_ih^T)", "hoisted GEMM, backward dX"):
        assert pieces[name]["kind"] == ("probe" if packed else "blas")
    assert pieces["training step (layer API)"]["pct"] == pytest.approx(100.0)
    perf = doc["perf"]
    if "unavailable" not in perf:
        cats = perf["3x6x4x5"]["categories"]
        assert sum(cats.values()) == pytest.approx(100.0, abs=2.0)
        assert "grucy packed GEMM kernel (grucy_pgemm_*)" in cats
    assert "Training step of grucy.GRU broken down" in capsys.readouterr().out


@pytest.fixture
def chunking():
    """_gru._set_chunking(...) for one test, restored afterwards."""
    from grucy import _gru

    old = _gru._set_chunking(1 << 17)
    _gru._set_chunking(*old)
    yield _gru._set_chunking
    _gru._set_chunking(*old)


def _unpack(buf, K, panels):
    """A packed operand of _pgemm.h back to its (K, panels * 32) matrix B."""
    return buf[:panels * K * 32].reshape(panels, K, 32).transpose(1, 0, 2).reshape(K, -1)


def _packed(w, K):
    """(K, n) matrix w as _pgemm.h packs it: panels of 32 columns, zero-padded, flat."""
    n = w.shape[1]
    p = -(-n // 32)
    full = np.zeros((K, p * 32), w.dtype)
    full[:, :n] = w
    return full.reshape(K, p, 32).transpose(1, 0, 2).ravel()


@pytest.mark.parametrize("B, T, H, min_chunk", [
    (3, 6, 5, 32),     # serial kernels, T >= 4: packed whole W_hh
    (3, 3, 5, 32),     # serial kernels, T < 4: BLAS
    (2, 3, 200, 32),   # chunked: 6 chunks (the last 40 units)
    (2, 3, 200, 16),   # chunked: 8 chunks of 16 or 32 units (3c = 48: padded panels)
])
def test_profile_split_mirrors_the_kernels_packed_operands(B, T, H, min_chunk, chunking,
                                                           rng):
    """The profiler's packed operands are, value for value, what the kernels pack into
    their pool buffer "pk" (forward: the W_hh blocks, then W_ih^T; the backward reuses
    the buffer: the W_hh[:, chunk] blocks, then W_ih), its split flags match, and its
    row halves are those of the kernels' weight gradients (the second half's partial
    sums, read back from the kernels' scratch)."""
    from grucy import _gru
    from grucy._bench_profile import kernel_split, recurrent_operands

    chunking(1 << 17, min_chunk, 16)
    split = kernel_split(H, B, T)
    I, N, H3 = 40, T * B, 3 * H  # I = 40: W_ih packed for dX has a padded second panel
    w_ih, w_hh = (rng.standard_normal((3 * H, n)).astype(np.float32) for n in (I, H))
    b = np.zeros(3 * H, np.float32)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    y = np.empty((T, B, H), np.float32)
    pool = {}
    ws = _gru.forward(x, w_ih, w_hh, b, b, np.zeros((B, H), np.float32), y,
                      np.full(T, B, np.intc), False, True, True, pool)
    pk_fwd = pool["pk"].copy() if "pk" in pool else None
    grads = [np.zeros_like(a) for a in (w_ih, w_hh, b, b)]
    _gru.backward(ws, y, np.zeros((B, H), np.float32), w_ih, w_hh, *grads,
                  np.empty_like(x), False)
    assert split.chunked == (B * 3 * H * H >= 1 << 17)
    assert split.packed == ("pk" in pool) and "pkb" not in pool
    assert split.packed == (_gru.packed_gemm_enabled() and (split.chunked or T >= 4))
    if split.chunked:
        assert len(split.bounds) - 1 == (6 if min_chunk == 32 else 8)
    # The second half of the rows [N//2, N) went to the scratch (beta = 0): W2 holds
    # its dW_ih, db_ih, db_hh; dW_hh's is in the dead packed W_hh (packed) or after them.
    h = split.row_halves[1]
    assert split.row_halves == [0, N // 2, N]
    dG, Hp, X = pool["dG"][:N * H3].reshape(N, H3), ws["Hp"], x.reshape(N, I)
    dGx = np.concatenate([dG[:, :2 * H], pool["dGxn"][:N * H].reshape(N, H)], axis=1)
    W2 = pool["W2"]
    tol = dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(W2[:H3 * I].reshape(H3, I), dGx[h:].T @ X[h:], **tol)
    np.testing.assert_allclose(W2[H3 * I:H3 * (I + 1)], dGx[h:].sum(0), **tol)
    np.testing.assert_allclose(W2[H3 * (I + 1):H3 * (I + 2)], dG[h:].sum(0), **tol)
    w2hh = pool["pk"][:H3 * H] if split.packed else W2[H3 * (I + 2):H3 * (I + 2 + H)]
    np.testing.assert_allclose(w2hh.reshape(H3, H), dG[h:].T @ Hp[h:], **tol)
    if not split.packed:
        return
    panels = lambda n: -(-n // 32)  # noqa: E731
    for nt in (1, 2, 3):  # every thread's operands together are the whole W_hh
        teams = [list(range(t, len(split.bounds) - 1, nt)) for t in range(nt)
                 if t < len(split.bounds) - 1]
        ops = [recurrent_operands(w_hh, split.bounds, team) for team in teams]
        size_f = sum(panels(wf.shape[0]) * 32 * H for wf, _, _ in ops)
        size_b = sum(panels(wb.shape[1]) * 32 * H3 for _, wb, _ in ops)
        # W_ih follows W_hh; the buffer has room for the larger of the two calls
        assert pool["pk"].size == max(size_f + I * panels(H3) * 32,
                                      size_b + H3 * panels(I) * 32)
    # One thread: its operands are exactly what the kernels packed, padding included.
    wf, wb, layout = recurrent_operands(w_hh, split.bounds, range(len(split.bounds) - 1))
    got_f = _unpack(pk_fwd, H, panels(wf.shape[0])).T
    np.testing.assert_array_equal(got_f[:wf.shape[0]], wf)
    assert not got_f[wf.shape[0]:].any()
    np.testing.assert_array_equal(pk_fwd[size_f:size_f + I * panels(H3) * 32],
                                  _packed(w_ih.T, I))
    # Backward: the dW_hh scratch overwrote the first 3H*H values of the W_hh blocks
    pk = pool["pk"]
    np.testing.assert_array_equal(pk[H3 * H:size_b], _packed(wb, H3)[H3 * H:])
    np.testing.assert_array_equal(pk[size_b:size_b + H3 * panels(I) * 32],
                                  _packed(w_ih, H3))
    assert [k for k, _, _ in layout] == list(range(len(split.bounds) - 1))


def test_profile_recurrent_lines_time_the_packed_kernel(monkeypatch, rng):
    """With the packed path on, the recurrent-GEMM lines run grucy._gru._pgemm_probe
    on each thread's operands (M = B, K = H forward / 3H backward, T repeats) and report
    the probe's own time; with it off, they call BLAS and the probe is never used."""
    from grucy import _gru
    from grucy._bench_profile import ScipyBlas, gemm_pieces, kernel_split

    if not _gru.packed_gemm_enabled():
        pytest.skip("the packed kernel needs an AVX-512 CPU")
    B, T, I, H, nt = 4, 3, 40, 128, 2
    calls, operands = [], []
    real = _gru._pgemm_probe

    def spy(a, w, transposed, c, repeats):
        real(a, w, transposed, c, repeats)
        calls.append((a.shape, w.shape, transposed, c.shape, repeats))
        operands.append(np.array(w))
        return 0.125  # the lines must report what the probe says

    monkeypatch.setattr(_gru, "_pgemm_probe", spy)
    split = kernel_split(H, B, T)
    assert split.chunked and split.packed and len(split.bounds) == 5
    pieces, bufs = gemm_pieces(ScipyBlas(), B, T, I, H, split, nt)
    for name, transposed, K in (("recurrent GEMM, forward", True, H),
                                ("recurrent GEMM, backward", False, 3 * H)):
        p = pieces[name]
        assert p["kind"] == "probe" and len(p["threads"]) == nt
        calls.clear()
        assert [fn() for fn, _ in p["threads"]] == [0.125, 0.125]
        # 4 chunks of 32 units: thread t multiplies chunks t and t + 2
        want_n = 2 * (96 if transposed else 32)
        assert calls == [((B, K), (want_n, H) if transposed else (3 * H, want_n),
                          transposed, (B, want_n), T)] * nt
    # The products are those of the kernels: Gh of the thread's chunks, dh of its units.
    S, whh, bounds = bufs["S"], bufs["w_hh"], split.bounds
    for rec in bufs["recurrent"]:
        for k, col_f, col_b in rec["layout"]:
            j0, c = bounds[k], bounds[k + 1] - bounds[k]
            rows = np.concatenate([np.arange(g * H + j0, g * H + j0 + c) for g in range(3)])
            np.testing.assert_allclose(rec["c_fwd"][:, col_f:col_f + 3 * c],
                                       S @ whh[rows].T, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(rec["c_bwd"][:, col_b:col_b + c],
                                       rec["a_bwd"] @ whh[:, j0:j0 + c], rtol=1e-4,
                                       atol=1e-4)
    # The packing line: each thread packs its chunks' W_hh blocks (as above) and its
    # share of W_ih's panels (P * tid // nt ..), forward (W_ih^T) and backward (W_ih).
    pack = pieces["W_hh + W_ih packing (forward + backward)"]
    assert pack["kind"] == "pack" and len(pack["threads"]) == nt
    fwd_ih, bwd_ih = [], []
    for tid, (fn, ncalls) in enumerate(pack["threads"]):
        calls.clear()
        operands.clear()
        fn()
        ws = [w for w in operands if w.shape != (1, 1)]  # not the untimed warm-ups
        assert len(ws) == ncalls == 4
        np.testing.assert_array_equal(ws[0], bufs["recurrent"][tid]["w_fwd"])
        np.testing.assert_array_equal(ws[1], bufs["recurrent"][tid]["w_bwd"])
        fwd_ih.append(ws[2])
        bwd_ih.append(ws[3])
    # 3H = 384 columns of W_ih^T: 12 panels, 6 per thread; I = 40: 2 panels, one each
    assert [w.shape for w in fwd_ih] == [(192, I), (192, I)]
    assert [w.shape for w in bwd_ih] == [(3 * H, 32), (3 * H, 8)]
    np.testing.assert_array_equal(np.concatenate(fwd_ih), bufs["w_ih"])
    np.testing.assert_array_equal(np.concatenate(bwd_ih, axis=1), bufs["w_ih"])
    old = _gru._set_packed(False)
    try:
        calls.clear()
        split = kernel_split(H, B, T)
        assert not split.packed
        pieces, _ = gemm_pieces(ScipyBlas(), B, T, I, H, split, nt)
        for name in ("recurrent GEMM, forward", "recurrent GEMM, backward"):
            assert pieces[name]["kind"] == "blas"
            for fn, ncalls in pieces[name]["threads"]:
                fn()
                assert ncalls == 2 * T  # two chunks per thread, every step
        assert "W_hh + W_ih packing (forward + backward)" not in pieces
        assert calls == []
    finally:
        _gru._set_packed(old)


@pytest.mark.parametrize("B, T, I, H, nt", [(4, 3, 40, 128, 2), (3, 6, 40, 5, 1)])
def test_profile_input_projection_and_dx_lines_use_the_kernels_gemm(monkeypatch, B, T, I,
                                                                    H, nt):
    """With the packed path on, the input projection and dX lines run
    grucy._gru._pgemm_probe on the kernels' row blocks (thread t: blocks t, t + n, ...;
    once each) with the kernels' operands (X @ W_ih^T; dG[:, :2H] @ W_ih[:2H] and
    dGxn @ W_ih[2H:]) and report the probe's own time; with it off, they call BLAS."""
    from grucy import _gru
    from grucy._bench_profile import ScipyBlas, gemm_pieces, kernel_split

    if not _gru.packed_gemm_enabled():
        pytest.skip("the packed kernel needs an AVX-512 CPU")
    calls = []
    real = _gru._pgemm_probe

    def spy(a, w, transposed, c, repeats):
        real(a, w, transposed, c, repeats)
        calls.append((a.copy(), w.copy(), transposed, c.shape, repeats))
        return 0.125

    monkeypatch.setattr(_gru, "_pgemm_probe", spy)
    split = kernel_split(H, B, T)
    assert split.packed and split.chunked == (H == 128)
    N, H3 = T * B, 3 * H
    rows = [N * k // 8 for k in range(9)]
    pieces, b = gemm_pieces(ScipyBlas(), B, T, I, H, split, nt)
    line_f = pieces["hoisted GEMM, forward (X W_ih^T)"]
    line_x = pieces["hoisted GEMM, backward dX"]
    assert line_f["kind"] == line_x["kind"] == "probe"
    assert len(line_f["threads"]) == len(line_x["threads"]) == nt
    for tid in range(nt):
        blocks = [(rows[k], rows[k + 1]) for k in range(tid, 8, nt) if rows[k + 1] > rows[k]]
        calls.clear()
        assert line_f["threads"][tid][0]() == 0.125 * len(blocks)
        assert len(calls) == len(blocks)
        for (a, w, transposed, cshape, repeats), (r0, r1) in zip(calls, blocks):
            np.testing.assert_array_equal(a, b["X"][r0:r1])
            np.testing.assert_array_equal(w, b["w_ih"])
            assert transposed and cshape == (r1 - r0, H3) and repeats == 1
        calls.clear()
        assert line_x["threads"][tid][0]() == 0.125 * 2 * len(blocks)
        assert len(calls) == 2 * len(blocks)
        for k, (r0, r1) in enumerate(blocks):
            (a1, w1, t1, c1, n1), (a2, w2, t2, c2, n2) = calls[2 * k:2 * k + 2]
            np.testing.assert_array_equal(a1, b["dG"][r0:r1, :2 * H])
            np.testing.assert_array_equal(w1, b["w_ih"][:2 * H])
            np.testing.assert_array_equal(a2, b["dGxn"][r0:r1])
            np.testing.assert_array_equal(w2, b["w_ih"][2 * H:])
            assert (t1, t2, c1, c2, n1, n2) == (False, False, (r1 - r0, I), (r1 - r0, I), 1, 1)
    old = _gru._set_packed(False)
    try:
        split = kernel_split(H, B, T)
        assert not split.packed
        pieces, _ = gemm_pieces(ScipyBlas(), B, T, I, H, split, nt)
        calls.clear()
        for name, per_block in (("hoisted GEMM, forward (X W_ih^T)", 1),
                                ("hoisted GEMM, backward dX", 2)):
            assert pieces[name]["kind"] == "blas"
            for tid, (fn, ncalls) in enumerate(pieces[name]["threads"]):
                fn()
                assert ncalls == per_block * len(range(tid, 8, nt))
        assert calls == []
    finally:
        _gru._set_packed(old)


@pytest.mark.parametrize("B, T, I, H, nt, nt_fwd, nt_bwd", [
    (4, 3, 8, 128, 2, 2, 2),    # chunked: the whole team
    (4, 3, 8, 128, 1, 1, 1),
    (2, 5, 3, 6, 2, 1, 1),      # serial, little work: one thread
    (2, 200, 64, 32, 2, 2, 2),  # serial, N*3H*I = 2.5M >= 1 << 20: the team
    (2, 100, 16, 64, 2, 1, 2),  # serial, N*3H*I = 0.6M < 1 << 20 <= N*3H*(I+H)
])
def test_profile_hoisted_gemms_compute_the_kernels_products(B, T, I, H, nt, nt_fwd,
                                                            nt_bwd):
    """Run once, every thread's share of the hoisted lines together computes the input
    projection, dW_ih, dW_hh, both bias gradients and dX: each row block and each row
    half exactly once (a missed or doubled one shows), the second half in the scratch
    and then added in; the lines run on the kernels' thread teams (row block and half k
    to thread k % n; the serial kernels use the team from 1 << 20 multiply-adds on)."""
    from grucy._bench_profile import ScipyBlas, gemm_pieces, kernel_split

    split = kernel_split(H, B, T)
    assert split.chunked == (H == 128)
    N = T * B
    pieces, bufs = gemm_pieces(ScipyBlas(), B, T, I, H, split, nt)
    for name, teams, per_item in (
            ("hoisted GEMM, forward (X W_ih^T)", nt_fwd, 1),
            ("hoisted GEMM, backward dW_ih", nt_bwd, 2),
            ("hoisted GEMM, backward dW_hh", nt_bwd, 2),
            ("bias gradient sums (GEMV), backward", nt_bwd, 4),
            ("hoisted GEMM, backward dX", nt_bwd, 2),
            ("weight gradients: second half added (memory-bound)", nt_bwd, 4)):
        threads = pieces[name]["threads"]
        items = 2 if "dW" in name or "bias" in name else 8  # row halves / ROW_BLOCKS
        assert [n for _, n in threads] == [per_item * len(range(t, items, teams))
                                           for t in range(teams)], name
        for fn, _ in threads:
            fn()
    b, h = bufs, N // 2
    dgx = np.concatenate([b["dG"][:, :2 * H], b["dGxn"]], axis=1)
    tol = dict(rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(b["G"], b["X"] @ b["w_ih"].T, **tol)
    np.testing.assert_allclose(b["w2_ih"], dgx[h:].T @ b["X"][h:], **tol)
    np.testing.assert_allclose(b["w2_hh"], b["dG"][h:].T @ b["Hp"][h:], **tol)
    np.testing.assert_allclose(b["w2_b"], [dgx[h:].sum(0), b["dG"][h:].sum(0)], **tol)
    np.testing.assert_allclose(b["dw_ih"], dgx.T @ b["X"], **tol)
    np.testing.assert_allclose(b["dw_hh"], b["dG"].T @ b["Hp"], **tol)
    np.testing.assert_allclose(b["db_ih"], dgx.sum(0), **tol)
    np.testing.assert_allclose(b["db_hh"], b["dG"].sum(0), **tol)
    # packed: the probe overwrites, so the second product has its own output dX_n
    dx = b["dX"] + b["dX_n"] if split.packed else b["dX"]
    np.testing.assert_allclose(dx, dgx @ b["w_ih"], **tol)


# Every (m, trans_a, trans_b) the kernels use; a transposed single row never occurs.
@pytest.mark.parametrize("m, trans_a, trans_b", [
    (m, ta, tb) for m in (1, 5) for ta, tb in ((False, True), (False, False), (True, False))
    if not (ta and m == 1)])
def test_profile_blas_calls_compute_what_the_kernels_compute(m, trans_a, trans_b, rng):
    """The profiler times GEMMs through raw BLAS pointers; make sure they are the right
    GEMMs (row-major C = op(A) @ op(B) + beta C, GEMV when m == 1, as _blas.pxd)."""
    from grucy._bench_profile import ScipyBlas

    n, k = 7, 4
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c = rng.standard_normal((m, n)).astype(np.float32)
    want = (a.T if trans_a else a) @ (b.T if trans_b else b) + 0.5 * c
    call = ScipyBlas().gemm_call(trans_a, trans_b, m, n, k, (a, 0), a.shape[1], (b, 0),
                                 b.shape[1], 0.5, (c, 0), n)
    call()
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)


def test_profile_shape_on_the_blas_path_times_the_regroup_copy():
    """With the packed kernel off, the chunked kernels regroup W_hh per call and call
    BLAS for the recurrent GEMMs: the profile shows that copy and no packing line."""
    import grucy
    from grucy import _gru
    from grucy._bench_profile import ScipyBlas, profile_shape

    old = _gru._set_packed(False)
    try:
        row = profile_shape((4, 3, 8, 128), grucy, ScipyBlas(), 0.01, 2, 0, lambda _: None)
    finally:
        _gru._set_packed(old)
    assert row["chunked"] and not row["packed"] and row["notes"] == []
    pieces = {k.strip(): v for k, v in row["pieces"].items()}
    assert np.isfinite(pieces["W_hh regroup copy (chunked BLAS path)"]["ms"])
    assert "W_hh + W_ih packing (forward + backward)" not in pieces
    for name in ("recurrent GEMM, forward", "recurrent GEMM, backward",
                 "hoisted GEMM, forward (X W_ih^T)", "hoisted GEMM, backward dX"):
        assert pieces[name]["kind"] == "blas" and "BLAS calls" in pieces[name]["how"]


def test_blocked_order_gives_each_implementation_an_equal_share_of_time():
    """Blocked measurement: every entry gets about target / n of the time, so a faster
    one is sampled more often; interleaved rounds give all the same count."""
    import time as _time
    from grucy.benchmark import Entry, measure

    fast = Entry("fast", lambda: _time.sleep(0.001))
    slow = Entry("slow", lambda: _time.sleep(0.004))
    times = measure([fast, slow], 0.2, 3, order="blocked")
    n_fast, n_slow = len(times["fast"]), len(times["slow"])
    assert n_slow >= 3 and n_fast >= 2 * n_slow, (n_fast, n_slow)
    assert n_fast <= 0.1 / 0.001 + 1 and n_slow <= 0.1 / 0.004 + 1
    times = measure([fast, slow], 0.1, 3, order="interleaved")
    assert len(times["fast"]) == len(times["slow"])
