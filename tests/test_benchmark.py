"""The benchmark harness (bench/bench_gru.py, outside the package) runs end to end on
tiny shapes.

These tests never look at times: they check that every case runs, that the JSON report
has its structure, that each installed peer agreed with grucy before it was timed, that
a peer returning wrong numbers is caught and left untimed, and that the busy mode's
competing processes are gone when it ends.  Peers that are not installed are expected
to be reported as missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import _bench_peers as bp  # noqa: E402
import bench_gru  # noqa: E402
from _bench_cases import CHECK_TOL  # noqa: E402
from _bench_machine import BusyLoad  # noqa: E402

from conftest import importorskip

TINY = [
    "--quick", "--shapes", "3x6x4x5", "--extra-shape", "2x5x3x4",
    "--stream-size", "4x5", "--gemm-size", "64", "--target-seconds", "0.01",
    "--min-repeats", "2", "--peers", "torch,onnxruntime,numpy,keras-tf",
    "--threads", "1,2", "--sweep-shapes", "3x6x4x5,2x5x3x4",
]


def _installed(*modules):
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie is not a running spinner
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    return True


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One full tiny run (every case), from an empty working directory; returns (exit
    status, JSON document, stdout, output folder, working directory)."""
    out = tmp_path_factory.mktemp("bench")
    cwd = tmp_path_factory.mktemp("cwd")
    buf = io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(buf):
            status = bench_gru.main(TINY + ["--json", f"{out}{os.sep}", "--markdown",
                                            str(out / "table.md"), "--plot",
                                            str(out / "s.png")])
    finally:
        os.chdir(old)
    with open(out / "bench_gru.json") as f:
        doc = json.load(f)
    return status, doc, buf.getvalue(), out, cwd


def test_full_run_succeeds_and_reports_every_case(report):
    status, doc, text, _, cwd = report
    assert status == 0, doc["failures"]
    assert doc["failures"] == []
    assert list(cwd.iterdir()) == []  # nothing written where it was not asked for
    kinds = {(r["kind"], r["mode"]) for r in doc["results"]}
    assert kinds == {(k, m) for k in ("core", "bidir", "float64", "varlen")
                     for m in ("train", "infer")}
    assert [r["label"] for r in doc["results"] if r["kind"] == "train"
            or r["mode"] == "train"] == ["3x6x4x5", "2x5x3x4 L2 bidir", "2x5x3x4 float64",
                                         "2x5x3x4 len~2.5"]
    for key in ("machine", "peaks", "peers", "sweep", "streaming", "memory", "targets"):
        assert key in doc
    assert doc["machine"]["threads"] == 2
    assert {"packed", "rows", "blas_core", "blas_threads"} <= set(doc["machine"]["kernels"])
    peaks = doc["peaks"]
    assert peaks["threads"] == 2 and peaks["fma_gflops"] > 0
    assert peaks["gemm"]["float32"]["n"] == 64
    assert {"float32", "float64"} <= set(peaks["gemm"])
    for heading in ("Training step", "Inference", "Variable lengths", "Thread sweep",
                    "Streaming", "Peak memory", "Targets (issue 13)", "FMA ", "OpenBLAS core"):
        assert heading in text


def test_every_available_peer_was_checked_then_timed(report):
    _, doc, _, _, _ = report
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
        if row["dtype"] == "float32":
            assert grucy["pct_fma"] == pytest.approx(
                100 * grucy["gflops"] / doc["peaks"]["fma_gflops"])
        assert grucy["pct_sgemm"] == pytest.approx(
            100 * grucy["gflops"] / doc["peaks"]["gemm"][row["dtype"]]["gflops"])
        for name, res in row["impls"].items():
            if name == "grucy":
                continue
            if res["status"] == "ok":
                # low-precision implementations agree to what their rounding allows
                tol = getattr(bp.LOWP.get(name), "CHECK_TOL", CHECK_TOL[np.dtype(row["dtype"])])
                assert res["check_tol"] == tol and res["max_rel_diff"] <= tol
                assert res["repeats"] >= 2 and len(res["ms_all"]) == res["repeats"]
                assert row["speedup"][name] == pytest.approx(res["ms_min"] / grucy["ms_min"])
            else:
                assert res["status"] == "unsupported", (name, row["label"], res)
        for name in ("torch", "numpy"):
            if expect[name]:
                assert row["impls"][name]["status"] == "ok", (name, row["label"])
        # issue 18: bf16 (both modes), int8 (inference) and torch's int8 with torch, in
        # the float32 cases
        lowp = {"grucy-bf16": True, "grucy-int8": row["mode"] == "infer",
                "torch-int8": row["mode"] == "infer" and expect["torch"]}
        for name, present in lowp.items():
            res = row["impls"].get(name)
            if not present or row["dtype"] == "float64":   # (float32 only: not run)
                assert res is None, (name, row["label"], row["mode"])
            else:
                assert res["status"] == "ok", (name, row["label"], res)
                assert 1e-5 < res["max_rel_diff"], name   # really low precision
        if row["dtype"] == "float32":
            assert row["lowp"]["bf16_vs_fp32"] == pytest.approx(
                row["impls"]["grucy"]["ms_min"] / row["impls"]["grucy-bf16"]["ms_min"])
            if lowp["torch-int8"]:
                assert row["lowp"]["int8_vs_torch_int8"] == pytest.approx(
                    row["impls"]["torch-int8"]["ms_min"]
                    / row["impls"]["grucy-int8"]["ms_min"])
        assert row.get("fastest_peer") not in lowp
        ort = row["impls"].get("onnxruntime")
        if row["mode"] == "train" or not expect["onnxruntime"]:
            assert ort is None
        elif row["dtype"] == "float64":
            # ONNX Runtime's GRU has no float64 kernel: reported, not faked.
            assert ort["status"] == "unsupported" and "float64" in ort["detail"]
        else:
            assert ort["status"] == "ok", row["label"]


def test_the_thread_sweep_times_every_count(report):
    _, doc, _, _, _ = report
    sw = doc["sweep"]
    assert sw["counts"] == [1, 2] and set(sw["peaks"]) == {"1", "2"}
    assert sw["peers"] == [p for p in ("torch", "onnxruntime")
                           if doc["peers"][p]["available"]]
    assert [(r["label"], r["mode"]) for r in sw["rows"]] == [
        ("3x6x4x5", "train"), ("3x6x4x5", "infer"), ("2x5x3x4", "train"),
        ("2x5x3x4", "infer")]
    for r in sw["rows"]:
        expected = {"grucy"} | {p for p in sw["peers"]
                                if r["mode"] in bp.PEERS[p].MODES}
        assert set(r["impls"]) == expected
        for name, d in r["impls"].items():
            ms = {n: d["by_threads"][n]["ms_min"] for n in ("1", "2")}
            assert d["efficiency"]["1"] == pytest.approx(1.0)
            assert d["efficiency"]["2"] == pytest.approx(ms["1"] / (2 * ms["2"]))
            assert d["vs_best_fewer"]["2"] == pytest.approx(ms["2"] / min(ms.values()))
            if name != "grucy":
                g = r["impls"]["grucy"]["by_threads"]
                assert r["speedup"][name]["2"] == pytest.approx(ms["2"] / g["2"]["ms_min"])
        assert r["impls"]["grucy"]["by_threads"]["1"]["pct_fma"] > 0


def test_side_cases_have_their_figures(report):
    _, doc, _, out, _ = report
    for v in doc["varlen"]:
        lengths = np.array(v["lengths"])
        assert lengths.min() >= 1 and lengths.max() <= v["T"]
        assert abs(lengths.mean() - v["T"] / 2) <= 0.5
        assert v["ratio"]["grucy"] > 0
    st = doc["streaming"]
    for name in ("grucy stream.step", "grucy step(x, h)", "grucy forward(T=1)"):
        assert st["impls"][name]["status"] == "ok"
    for name, res in st["impls"].items():
        assert res["status"] == "ok", (name, res)
        assert 0 < res["us_min"] <= res["us_median"]
    for row in doc["memory"]["shapes"]:
        for name, res in row["impls"].items():
            assert "error" not in res, (name, res)
            assert res["rss_peak_mib"] >= 0
    names = [t["name"] for t in doc["targets"]]
    assert names == ["train_vs_torch_16t_big", "train_vs_torch_16t_mid",
                     "efficiency_16t_big", "infer_vs_ort_16t", "threads_vs_mpi",
                     "more_threads_never_hurt", "train_vs_fastest", "infer_vs_ort",
                     "train_pct_fma", "busy_over_quiet", "busy_vs_peers",
                     "lowp_bf16_vs_fp32_train", "lowp_bf16_vs_fp32_infer",
                     "lowp_int8_vs_torch_int8_infer", "lowp_int8_vs_fp32_infer"]
    assert [t["issue"] for t in doc["targets"]] == [13] * 11 + [18] * 4
    by = {t["name"]: t for t in doc["targets"]}
    for t in doc["targets"]:
        assert t["status"] in ("met", "missed", "not measured")
        assert (t["measured"] is None) == (t["status"] == "not measured")
    # Not a 16-core sweep, no busy mode: those are not measured; the sweep's own is.
    for name in ("train_vs_torch_16t_big", "efficiency_16t_big", "infer_vs_ort_16t",
                 "threads_vs_mpi", "busy_over_quiet"):
        assert by[name]["status"] == "not measured"
    assert by["more_threads_never_hurt"]["measured"] >= 1.0
    md = (out / "table.md").read_text()
    assert "| target (issue 13) |" in md and "| target (issue 18) |" in md
    assert "| 3x6x4x5 | infer |" in md          # the low-precision table
    # one row of the core table, two of the sweep table (1 and 2 threads), two of the
    # low-precision table (train, infer)
    assert md.count("\n| 3x6x4x5 |") == 5 and "| 3x6x4x5 | 2 |" in md
    if _installed("matplotlib"):
        assert (out / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _sweep_doc(cpus, counts, speedup16):
    """A minimal document for evaluate_targets: one sweep row per 16-thread shape."""
    rows = []
    for label in ("256x50x256x512", "64x50x256x512"):
        for mode, peer in (("train", "torch"), ("infer", "onnxruntime")):
            grucy = {"efficiency": {str(n): 1.0 / n for n in counts},
                     "vs_best_fewer": {str(n): 1.0 for n in counts}}
            rows.append({"label": label, "mode": mode, "impls": {"grucy": grucy},
                         "speedup": {peer: {str(n): speedup16 for n in counts}}})
    return {"machine": {"usable_cpus": cpus}, "sweep": {"counts": counts, "rows": rows},
            "busy": {}, "results": []}


def test_the_16_thread_targets_need_a_16_core_sweep():
    from _bench_report import evaluate_targets

    def status(doc):
        return {t["name"]: (t["status"], t["measured"]) for t in evaluate_targets(doc)}

    met = status(_sweep_doc(16, [1, 4, 16], 2.5))
    assert met["train_vs_torch_16t_big"] == ("met", 2.5)
    assert met["train_vs_torch_16t_mid"] == ("met", 2.5)
    assert met["infer_vs_ort_16t"] == ("met", 2.5)
    assert met["efficiency_16t_big"] == ("missed", 1.0 / 16)
    assert met["threads_vs_mpi"][0] == "not measured"
    for doc in (_sweep_doc(8, [1, 4, 16], 2.5), _sweep_doc(16, [1, 4, 8], 2.5)):
        s = status(doc)
        for name in ("train_vs_torch_16t_big", "train_vs_torch_16t_mid",
                     "efficiency_16t_big", "infer_vs_ort_16t"):
            assert s[name] == ("not measured", None), (name, doc["machine"])
        assert s["more_threads_never_hurt"] == ("met", 1.0)


def test_a_wrong_peer_is_caught_and_not_timed(tmp_path, monkeypatch, capsys):
    real = bp.NumpyPeer.train_outputs

    def wrong(self):
        out = real(self)
        out["grad:weight_hh_l0"] = out["grad:weight_hh_l0"] * 1.01
        return out

    monkeypatch.setattr(bp.NumpyPeer, "train_outputs", wrong)
    status = bench_gru.main(TINY + ["--cases", "core", "--peers",
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
                                 ["--cases", "scaling"], ["--threads", "0"],
                                 ["--threads", "1,x"], ["--threads", "1,100000"],
                                 ["--busy", "-1"], ["--sweep-shapes", "1x2"],
                                 ["--stream-size", "4x5x6"]])
def test_bad_options_are_refused(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_gru.main(bad)
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


def test_profile_mode_reads_the_kernels_own_timers(tmp_path, capsys):
    path = tmp_path / "p.json"
    status = bench_gru.main(["--profile", "--quick", "--shapes", "3x6x4x5,9x7x5x40",
                             "--target-seconds", "0.05", "--min-repeats", "2",
                             "--json", str(path)])
    assert status == 0
    doc = json.loads(path.read_text())
    assert [s["label"] for s in doc["shapes"]] == ["3x6x4x5", "9x7x5x40"]
    for shape in doc["shapes"]:
        phases = shape["phases"]
        for name in ("pack", "projection_dx", "recurrent_gemm", "fused", "wait",
                     "weight_grads"):
            assert phases[name]["ms"] >= 0, name
        # the GEMM phases and the fused passes took time, and the kernels' phases add
        # up to no more than the kernels' wall time (per thread)
        assert phases["recurrent_gemm"]["ms"] > 0 and phases["fused"]["ms"] > 0
        assert phases["recurrent_gemm"]["gflops_per_thread"] > 0
        total = sum(phases[k]["ms"] for k in ("pack", "projection_dx", "recurrent_gemm",
                                              "fused", "wait", "weight_grads"))
        assert total <= 1.05 * shape["kernel_ms"]
        assert shape["plan"]["threads"] >= 1 and shape["plan"]["groups"] >= 1
    assert "the kernels' own phase timers" in capsys.readouterr().out


def test_blocked_order_gives_each_implementation_an_equal_share_of_time():
    """Blocked measurement: every entry gets about target / n of the time, so a faster
    one is sampled more often; interleaved rounds give all the same count."""
    import time as _time
    from _bench_timing import Entry, measure

    fast = Entry("fast", lambda: _time.sleep(0.001))
    slow = Entry("slow", lambda: _time.sleep(0.004))
    times = measure([fast, slow], 0.2, 3, order="blocked")
    n_fast, n_slow = len(times["fast"]), len(times["slow"])
    assert n_slow >= 3 and n_fast >= 2 * n_slow, (n_fast, n_slow)
    assert n_fast <= 0.1 / 0.001 + 1 and n_slow <= 0.1 / 0.004 + 1
    times = measure([fast, slow], 0.1, 3, order="interleaved")
    assert len(times["fast"]) == len(times["slow"])


def test_busy_load_runs_until_its_block_ends_however_it_ends():
    with BusyLoad(2) as load:
        pids = load.pids
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        ticks = []  # utime + stime of each spinner, in clock ticks
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                ticks.append(sum(map(int, f.read().split(")")[-1].split()[11:13])))
        time.sleep(0.3)
        for pid, t0 in zip(pids, ticks):
            with open(f"/proc/{pid}/stat") as f:
                assert sum(map(int, f.read().split(")")[-1].split()[11:13])) > t0  # spins
    assert not any(_alive(p) for p in pids)
    with pytest.raises(KeyboardInterrupt):
        with BusyLoad(1) as load:
            pids = load.pids
            raise KeyboardInterrupt
    assert not any(_alive(p) for p in pids)


def test_busy_mode_times_every_implementation_under_load_then_stops_it(tmp_path):
    path = tmp_path / "b.json"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        status = bench_gru.main(TINY + ["--cases", "core", "--peers", "numpy,onnxruntime",
                                        "--busy", "2", "--json", str(path)])
    assert status == 0
    doc = json.loads(path.read_text())
    busy = doc["busy"]
    assert busy["threads"] == 2 and busy["stopped"] and len(busy["pids"]) == 2
    assert not any(_alive(p) for p in busy["pids"])
    assert [(r["label"], r["mode"]) for r in busy["rows"]] == [("3x6x4x5", "train"),
                                                               ("3x6x4x5", "infer")]
    quiet = {(r["label"], r["mode"]): r for r in doc["results"]}
    for r in busy["rows"]:
        for name, d in r["impls"].items():
            assert d["status"] == "ok", (name, d)
            q = quiet[(r["label"], r["mode"])]["impls"][name]["ms_min"]
            assert d["quiet_ms"] == q
            assert d["busy_over_quiet"] == pytest.approx(d["busy_ms"] / q)
            qm = quiet[(r["label"], r["mode"])]["impls"][name]["ms_median"]
            assert d["quiet_median_ms"] == qm
            assert d["busy_over_quiet_median"] == pytest.approx(d["busy_median_ms"] / qm)
        assert set(r["speedup"]) == set(r["speedup_median"]) == set(r["impls"]) - {"grucy"}
        for name, s in r["speedup_median"].items():  # the targets' ratios: of medians
            assert s == pytest.approx(r["impls"][name]["busy"]["ms_median"]
                                      / r["impls"]["grucy"]["busy"]["ms_median"])
    by = {t["name"]: t for t in doc["targets"]}
    assert by["busy_over_quiet"]["status"] != "not measured"
    assert "Busy machine: 2 processes" in out.getvalue()


def test_the_portable_target_names_the_blas_kernel_it_was_measured_against():
    # The x86 portable build is SSE2 without FMA; against OpenBLAS's AVX2 kernel the
    # target compares instruction sets, and the report must say how to compare like
    # with like (and must not say it when OpenBLAS already runs an SSE kernel).
    from _bench_report import evaluate_targets

    def doc(core, platform):
        rows = [{"kind": "core", "label": "4x5x6x7", "mode": mode, "gflop": 1.0,
                 "impls": {"grucy": {}},
                 "speedup": {"grucy-portable": 2.0, "grucy-blas": 1.0}}
                for mode in ("train", "infer")]
        return {"machine": {"usable_cpus": 2, "platform": platform,
                            "kernels": {"blas_core": core}},
                "results": rows, "sweep": {}, "busy": {}}

    def portable(d):
        return [t for t in evaluate_targets(d) if t["name"].startswith("portable_")]

    haswell = portable(doc("Haswell", "Linux-6.1-x86_64-with-glibc2.36"))
    assert [t["status"] for t in haswell] == ["missed", "missed"]
    assert [t["measured"] for t in haswell] == [0.5, 0.5]
    assert all("OpenBLAS core Haswell" in t["note"] and "OPENBLAS_CORETYPE=Nehalem"
               in t["note"] for t in haswell)
    for core, platform in (("Nehalem", "Linux-6.1-x86_64-with-glibc2.36"),
                           ("NEOVERSEN1", "Linux-6.1-aarch64-with-glibc2.36")):
        assert all(t["note"] == "" for t in portable(doc(core, platform)))


# -- bad options of the bench/ scripts: refused up front, before any work ------------------
# Each script's argparse types come from bench/_bench_args.py: a bad value is the usual
# one-line "error: argument --x: ..." with exit status 2, no traceback, and nothing is
# measured or written.  (The arguments that come with each bad one keep the run tiny, in
# case a script does not refuse it.)
def _refused(capsys, main, argv, option):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"error: argument {option}: " in errors[0], err
    return errors[0]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory holding only ``afile`` (a file, so ``afile/x`` cannot
    be made) and ``adir`` (a folder); returns a function listing what else is there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir").mkdir()
    return lambda: sorted(set(os.listdir(tmp_path)) - {"afile", "adir"}) + sorted(
        os.listdir(tmp_path / "adir"))


@pytest.mark.parametrize("bad", [["--json", "afile/x.json"], ["--markdown", "afile/x.md"],
                                 ["--plot", "afile/x.png"], ["--markdown", "adir"],
                                 ["--plot", "adir/"], ["--json", "/proc/grucy/x.json"]])
def test_bench_gru_checks_its_output_paths_before_measuring(bad, workdir, capsys,
                                                            monkeypatch):
    def run(*args):
        raise AssertionError("measured before the output paths were checked")
    monkeypatch.setattr(bench_gru, "run", run)
    _refused(capsys, bench_gru.main, TINY + ["--cases", "core"] + bad, bad[0])
    assert workdir() == []


CORE_STEPS = "plans,mpi,isas,lasting,identical"


@pytest.mark.parametrize("bad", [["--skip", "sweeps," + CORE_STEPS],
                                 ["--skip", "sweep,all"], ["--threads", "0"],
                                 ["--seconds", "-1"], ["--seconds", "nan"],
                                 ["--shapes", "foo"], ["--shapes", "1x2x3"],
                                 ["--out", "afile"]])
def test_bench_cores_refuses_bad_options(bad, workdir, capsys, monkeypatch):
    import bench_cores

    def machine(*args):
        raise AssertionError("measured despite a bad option")
    monkeypatch.setattr(bench_cores, "machine", machine)
    tiny = ["--threads", "1", "--seconds", "0.01", "--shapes", "1x3x2x4",
            "--skip", "sweep," + CORE_STEPS]
    line = _refused(capsys, bench_cores.main, tiny + bad, bad[0])
    if bad[0] == "--skip":  # the known steps are listed
        assert "sweep,plans,mpi,isas,lasting,identical" in line
    assert workdir() == []


def test_bench_cores_writes_into_bench_results_by_default():
    import bench_cores

    assert Path(bench_cores.DEFAULT_OUT) == BENCH / "results" / "cores"  # git-ignored
    assert "(default `bench/results/cores/`" in (BENCH / "README.md").read_text()


@pytest.mark.parametrize("script, bad, option", [
    ("bench_threads", ["--quick", "--shape", "foo"], "--shape"),
    ("bench_threads", ["--quick", "--shape", "0x1x1x1"], "--shape"),
    ("bench_torch_module", ["--shape", "1x2x3x4", "--warmup", "0", "--repeats", "0"],
     "--repeats"),
    ("bench_torch_module", ["--shape", "1x2x3x4", "--warmup", "0", "--repeats", "1",
                            "--threads", "0"], "--threads"),
    ("lowp_accuracy", ["--shapes", "0"], "--shapes"),
    ("lowp_accuracy", ["--shapes", "1x3x2x4", "--json", "afile/x.json"], "--json"),
    ("lowp_demos", ["--demos", "foo"], "--demos"),
    ("soak", ["--stream-steps", "-1", "--train-steps", "10"], "--stream-steps"),
    ("soak", ["--stream-steps", "10", "--train-steps", "10", "--samples", "0"],
     "--samples"),
    ("soak", ["--stream-steps", "10", "--train-steps", "10", "--json", "adir"], "--json"),
    ("gradient_flow", ["--out", "afile/x.png"], "--out"),
])
def test_bench_scripts_refuse_bad_options(script, bad, option, workdir, capsys,
                                          monkeypatch):
    main = importlib.import_module(script).main
    monkeypatch.setattr(sys, "argv", [f"{script}.py"] + bad)  # as run from the shell
    _refused(capsys, lambda argv: main(), bad, option)
    assert workdir() == []


def test_bench_mpi_project_before_any_run_says_what_to_run(workdir, capsys, monkeypatch):
    import bench_mpi

    monkeypatch.setattr(bench_mpi, "DEFAULT_JSON", os.path.join("results", "bench_mpi.json"))
    line = _refused(capsys, bench_mpi.main, ["--project"], "--project")
    assert "no results file" in line and "python bench/bench_mpi.py" in line
    assert workdir() == []
