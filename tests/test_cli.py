"""The ``grucy`` command: every sub-command through ``grucy.cli.main`` and through a real
subprocess, with the demos' numbers checked against their baselines."""

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import grucy
from grucy import demo
from grucy.cli import main

from conftest import importorskip


def run(capsys, argv):
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def _env_with_grucy_on_path():
    env = dict(os.environ)
    src = str(Path(grucy.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return env


# -- help and the bare command -----------------------------------------------------------
@pytest.mark.parametrize("command", ["demo", "train", "predict", "info"])
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: grucy {command}") and len(out) > 300


def test_cli_without_command_prints_help(capsys):
    status, _, err = run(capsys, [])
    assert status == 2 and "demo" in err and "bench" in err and "info" in err


def test_unknown_arguments_are_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["info", "--bogus"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


# -- demo ----------------------------------------------------------------------------------
def test_demo_forecast_beats_ar9_and_writes_the_plot(capsys, tmp_path):
    png = tmp_path / "forecast.png"
    status, out, _ = run(capsys, ["demo", "--quiet", "--seed", "0", "--plot", str(png)])
    assert status == 0
    line = out.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("rmse_model=")
    numbers = dict(item.split("=", 1) for item in line[0].split())
    rmse, ar9 = float(numbers["rmse_model"]), float(numbers["rmse_ar9"])
    # the bar: within 10% of AR(9) (about 16) and far below persistence (about 31)
    assert ar9 == pytest.approx(16.17, abs=0.01)
    assert rmse < 1.1 * ar9 and rmse < 0.5 * float(numbers["rmse_persistence"])
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # no plot without matplotlib, and the line says nothing of one
        assert "plot" not in numbers and not png.exists()
    else:
        assert numbers["plot"] == str(png.resolve())
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_forecast_default_plot_in_cwd_and_no_plot(capsys, tmp_path, monkeypatch):
    importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(demo.FORECAST_SETTINGS, "epochs", 2)
    status, out, _ = run(capsys, ["demo"])
    assert status == 0 and "GRU forecaster" in out and "AR(9)" in out
    assert f"written to {tmp_path / demo.DEFAULT_PLOT}" in out
    (tmp_path / demo.DEFAULT_PLOT).unlink()
    status, out, _ = run(capsys, ["demo", "forecast", "--no-plot", "-q"])
    assert "plot=" not in out and not list(tmp_path.iterdir())


def test_demo_forecast_without_matplotlib_says_so(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    monkeypatch.setitem(demo.FORECAST_SETTINGS, "epochs", 1)
    status, out, _ = run(capsys, ["demo", "--plot", str(tmp_path / "x.png")])
    assert status == 0 and "matplotlib is not installed" in out
    assert not list(tmp_path.iterdir())


def test_demo_classify_reaches_the_digits_target(capsys):
    importorskip("sklearn")
    status, out, _ = run(capsys, ["demo", "classify", "-q"])
    assert status == 0
    numbers = dict(item.split("=") for item in out.split())
    assert float(numbers["accuracy"]) >= 0.95  # the bar, full size (~1 s)
    assert float(numbers["majority"]) < 0.2


def test_demo_lm_beats_the_bigram(capsys, monkeypatch):
    # reduced size (the full demo takes ~40 s): 80k characters, 2 epochs, 128 units
    monkeypatch.setattr(demo, "LM_TEXT_CHARS", 80_000)
    for key, value in dict(epochs=2, hidden_size=128, lr=1e-2, bptt=32,
                           batch_size=16).items():
        monkeypatch.setitem(demo.LM_SETTINGS, key, value)
    status, out, _ = run(capsys, ["demo", "lm", "-q"])
    assert status == 0
    numbers = dict(item.split("=") for item in out.split())
    assert float(numbers["bpc_model"]) < float(numbers["bpc_bigram"])


# -- train and predict ---------------------------------------------------------------------
def _series_csv(path, n=150):
    t = np.arange(n)
    lines = ["t,value,other"] + [f"{i},{np.sin(i / 4) * 10 + 50:.6f},{'' if i == 7 else 1}"
                                  for i in t]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_train_and_predict_a_forecaster(capsys, tmp_path):
    csv_path = _series_csv(tmp_path / "s.csv")
    model_path = tmp_path / "f.grucy"
    status, out, _ = run(capsys, ["train", "--csv", str(csv_path), "--column", "value",
                                  "--lookback", "8", "--epochs", "30", "--hidden-size",
                                  "16", "--lr", "0.01", "-o", str(model_path), "-q"])
    assert status == 0 and "saved Forecaster" in out
    model = grucy.load(model_path)
    assert isinstance(model, grucy.Forecaster) and model.lookback == 8
    status, out, _ = run(capsys, ["predict", str(model_path), "--csv", str(csv_path),
                                  "--column", "1", "--horizon", "3"])
    assert status == 0
    values = [float(v) for v in out.split()]
    assert len(values) == 3
    series = np.sin(np.arange(150) / 4) * 10 + 50
    np.testing.assert_allclose(values, model.predict(series, horizon=3), rtol=1e-5)
    truth = np.sin(np.arange(150, 153) / 4) * 10 + 50
    assert np.max(np.abs(np.array(values) - truth)) < 3.0  # learned the sine
    status, out, _ = run(capsys, ["predict", str(model_path), "--values",
                                  ",".join(str(v) for v in series[-8:])])
    assert status == 0 and float(out) == pytest.approx(values[0], rel=1e-5)


def test_train_resume_continues_exactly(capsys, tmp_path):
    csv_path = _series_csv(tmp_path / "s.csv")
    args = ["train", "--csv", str(csv_path), "--column", "value", "--lookback", "6",
            "--epochs", "4", "--hidden-size", "8", "--dropout", "0.2", "-q"]
    assert run(capsys, args + ["-o", str(tmp_path / "full.grucy"), "--checkpoint",
                               str(tmp_path / "ck-{epoch}.grucy")])[0] == 0
    assert run(capsys, args + ["-o", str(tmp_path / "resumed.grucy"), "--resume",
                               str(tmp_path / "ck-2.grucy")])[0] == 0
    a, b = grucy.load(tmp_path / "full.grucy"), grucy.load(tmp_path / "resumed.grucy")
    for (k, x), (_, y) in zip(a.net_.named_parameters(), b.net_.named_parameters()):
        np.testing.assert_array_equal(x, y, err_msg=k)
    assert a.history_ == b.history_


def test_train_and_predict_a_language_model(capsys, tmp_path):
    text = ("def add(a, b):\n    return a + b\n\n" * 60)
    (tmp_path / "t.txt").write_text(text)
    model_path = tmp_path / "lm.grucy"
    status, out, _ = run(capsys, ["train", "--text", str(tmp_path / "t.txt"), "--epochs",
                                  "3", "--hidden-size", "32", "--batch-size", "4",
                                  "--bptt", "16", "--lr", "0.01", "-o", str(model_path),
                                  "-q"])
    assert status == 0 and "val_bits_per_char" in out
    status, out, _ = run(capsys, ["predict", str(model_path), "--prompt", "def ", "-n",
                                  "20", "--seed", "1"])
    assert status == 0 and out.startswith("def ") and len(out.rstrip("\n")) >= 24
    status, out, _ = run(capsys, ["predict", str(model_path), "--text",
                                  str(tmp_path / "t.txt")])
    bpc = float(out.split("=")[1])
    assert bpc == pytest.approx(grucy.load(model_path).bits_per_char(text), abs=1e-6)


def test_predict_with_a_classifier_from_csv_rows(capsys, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    y = np.where(X[:, 0] > 0, "pos", "neg")
    clf = grucy.GRUClassifier(hidden_size=8, epochs=10, random_state=0).fit(X, y)
    grucy.save(clf, tmp_path / "c.grucy")
    np.savetxt(tmp_path / "rows.csv", X[:6], delimiter=",", header="a,b,c,d,e",
               comments="")
    status, out, _ = run(capsys, ["predict", str(tmp_path / "c.grucy"), "--csv",
                                  str(tmp_path / "rows.csv")])
    assert status == 0 and out.split() == list(clf.predict(X[:6]))


@pytest.mark.parametrize("argv, message", [
    (["train", "-o", "x.grucy"], "exactly one of --csv"),
    (["train", "--csv", "{csv}", "--column", "nope", "-o", "x.grucy"], "column 'nope'"),
    (["train", "--csv", "{csv}", "--column", "other", "-o", "x.grucy"], "--missing"),
    (["train", "--text", "{missing}", "-o", "x.grucy"], "cannot read"),
    (["predict", "{missing}"], "No such file"),
    (["predict", "{csv}"], "not a grucy file"),
])
def test_cli_errors_are_clear(capsys, tmp_path, argv, message):
    csv_path = _series_csv(tmp_path / "s.csv")
    argv = [a.format(csv=csv_path, missing=tmp_path / "nope.txt") for a in argv]
    status, _, err = run(capsys, argv)
    assert status == 2 and message in err and err.startswith("grucy ")


# -- bench and info ------------------------------------------------------------------------
def test_bench_forwards_every_argument(capsys, monkeypatch):
    seen = []
    fake = types.ModuleType("grucy.benchmark")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "grucy.benchmark", fake)
    assert main(["bench", "--quick", "--shapes", "1,2", "--help"]) == 3
    assert seen == [["--quick", "--shapes", "1,2", "--help"]]


def test_bench_without_the_benchmark_module_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "grucy.benchmark", None)  # import fails
    status, out, err = run(capsys, ["bench", "--help"])
    assert status == 2 and "no grucy.benchmark module" in err
    assert out.startswith("usage: grucy bench")


def test_info(capsys):
    status, out, _ = run(capsys, ["info"])
    assert status == 0
    assert f"grucy {grucy.__version__}" in out and "OpenMP: " in out and "BLAS" in out
    status, out, _ = run(capsys, ["info", "--json"])
    info = json.loads(out)
    assert info["openmp"] == grucy.openmp_enabled()
    assert info["threads"] == grucy.get_num_threads()
    assert info["numpy"] == np.__version__
    assert info["blas"] and "scikit-learn" in info["optional"]


# -- through a real process ----------------------------------------------------------------
def test_commands_in_a_subprocess(tmp_path):
    env = _env_with_grucy_on_path()

    def grucy_cmd(*argv):
        proc = subprocess.run([sys.executable, "-m", "grucy", *argv], capture_output=True,
                              text=True, timeout=120, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "grucy" in grucy_cmd("--version")
    assert "usage: grucy" in grucy_cmd("--help")
    assert "OpenMP" in grucy_cmd("info")
    csv_path = _series_csv(tmp_path / "s.csv")
    grucy_cmd("train", "--csv", str(csv_path), "--column", "value", "--epochs", "2",
              "--hidden-size", "4", "-o", "m.grucy", "-q")
    assert len(grucy_cmd("predict", "m.grucy", "--csv", str(csv_path), "--column",
                         "value", "--horizon", "2").split()) == 2


@pytest.mark.skipif(shutil.which("grucy") is None, reason="console script not installed")
def test_console_script_help():
    proc = subprocess.run(["grucy", "demo", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--seed" in proc.stdout
