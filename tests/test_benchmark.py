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
    pytest.importorskip("onnxruntime", reason="needs onnxruntime")
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
