"""The ``grucy`` command: every sub-command through ``grucy.cli.main`` and through a real
subprocess, with the demos' numbers checked against their baselines."""

import json
import os
import platform
import shutil
import subprocess
import sys
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
@pytest.mark.parametrize("command", ["demo", "train", "predict", "bench", "info"])
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
    assert status == 0 and out.count("matplotlib is not installed") == 1  # said once
    assert not list(tmp_path.iterdir())


def test_demo_forecast_reports_intervals_and_the_seasonal_naive(capsys):
    status, out, _ = run(capsys, ["demo", "-q", "--no-plot"])
    numbers = dict(item.split("=", 1) for item in out.split())
    assert status == 0 and float(numbers["rmse_model"]) < float(numbers["rmse_ar9"])
    assert float(numbers["rmse_ar9"]) < float(numbers["rmse_seasonal_naive"])
    assert 0.7 <= float(numbers["coverage80"]) <= 0.9


def test_demo_co2_prints_its_numbers_and_draws_the_band(capsys, tmp_path, monkeypatch):
    # the command's plumbing, reduced (the full demo: tests/test_real_data.py)
    for key, value in dict(epochs=1, lookback=52, horizon=13, hidden_size=8).items():
        monkeypatch.setitem(demo.CO2_SETTINGS, key, value)
    png = tmp_path / "co2.png"
    status, out, _ = run(capsys, ["demo", "co2", "-q", "--plot", str(png)])
    assert status == 0
    numbers = dict(item.split("=", 1) for item in out.split())
    assert {"rmse_model", "rmse_ar52", "rmse_seasonal_naive", "coverage80"} <= set(numbers)
    assert len([k for k in numbers if k.startswith("rmse_ar")]) == 2  # BIC and lookback
    if "plot" in numbers:  # matplotlib installed
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    status, out, _ = run(capsys, ["demo", "co2", "--no-plot"])
    assert "80% interval" in out and "AR(52), the lookback" in out
    assert "order by BIC" in out and "seasonal naive" in out


def test_demo_lines_prints_its_numbers(capsys, monkeypatch):
    monkeypatch.setattr(demo, "LINES_TRAIN", 300)
    monkeypatch.setattr(demo, "LINES_TEST", 200)
    monkeypatch.setitem(demo.LINES_SETTINGS, "epochs", 1)
    status, out, _ = run(capsys, ["demo", "lines", "-q"])
    numbers = dict(item.split("=") for item in out.split())
    assert status == 0 and set(numbers) == {"accuracy", "naive_bayes", "majority"}
    status, out, _ = run(capsys, ["demo", "lines"])
    assert "naive Bayes" in out and "held out 200" in out


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
    # every digit printed (it was .6g: 1234542.448 came out as 1.23454e+06)
    assert float(out) == model.predict(series[-8:], horizon=1)[0]


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


# -- every mistake: one line, no traceback, status 2 (bad arguments) or 1 (failures) -------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A series CSV, a 2-column CSV, a text, a saved Forecaster, CharLM and checkpoint."""
    d = tmp_path_factory.mktemp("cli")
    paths = {"dir": d, "csv": _series_csv(d / "s.csv"), "text": d / "t.txt",
             "two": d / "two.csv", "empty": d / "empty.csv"}
    paths["two"].write_text("t,value\n" + "".join(f"{i},{i % 7}\n" for i in range(40)))
    paths["empty"].write_text("t,value\n" + "".join(f"{i},\n" for i in range(40)))
    paths["text"].write_text("abc abd abe " * 30)
    paths["latin1"] = d / "latin1.csv"   # a CSV saved in Latin-1, not UTF-8
    paths["latin1"].write_bytes("temp \xb0C\n".encode("latin-1")
                                + b"".join(b"%d\n" % i for i in range(40)))
    series = np.sin(np.arange(60) / 4)
    f = grucy.Forecaster(lookback=4, hidden_size=3, epochs=1, random_state=0)
    f.fit(series, checkpoint=d / "run.ckpt")
    grucy.save(f, d / "f.grucy")
    kw = dict(lookback=4, hidden_size=3, epochs=1, random_state=0)
    grucy.save(grucy.Forecaster(**kw).fit(series, np.c_[series, series ** 2]),
               d / "fcov.grucy")
    grucy.save(grucy.Forecaster(**kw).fit(np.c_[series, series]), d / "ftwo.grucy")
    lm = grucy.CharLM(hidden_size=4, embedding_dim=2, bptt=8, batch_size=2, epochs=1,
                      random_state=0).fit("abc abd abe " * 30)
    grucy.save(lm, d / "lm.grucy")
    paths.update(model=d / "f.grucy", lm=d / "lm.grucy", ckpt=d / "run.ckpt",
                 fcov=d / "fcov.grucy", ftwo=d / "ftwo.grucy")
    return paths


def _format(argv, files):
    return [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]


def _one_line_error(status, out, err, expected_status, message):
    assert status == expected_status, (status, out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("grucy") and ": error: " in lines[0] and message in lines[0], \
        lines[0]


def _grucy_process(argv, cwd, hide=()):
    """``python -m grucy *argv`` in a real process; ``hide``: modules made unimportable."""
    code = ("import runpy, sys\n"
            + "".join(f"sys.modules[{m!r}] = None\n" for m in hide)
            + "runpy.run_module('grucy', run_name='__main__', alter_sys=True)\n")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                          text=True, timeout=120, env=_env_with_grucy_on_path(), cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


TRAIN = ["train", "--csv", "{csv}", "--column", "value", "--lookback", "4"]

# The mistakes of issue 12, each in a real process (exit status as the shell sees it).
PROCESS_MISTAKES = {
    # the output folder is checked before training (no "Training ..." line, no work lost)
    "output-folder-missing": (TRAIN + ["--epochs", "100000", "-o", "{dir}/nope/m.grucy"],
                              2, "the directory {dir}/nope does not exist"),
    "output-is-a-folder": (TRAIN + ["-o", "{dir}"], 2, "is a directory"),
    "output-under-a-file": (TRAIN + ["-o", "{csv}/m.grucy"], 2, "does not exist"),
    "checkpoint-folder-missing": (TRAIN + ["-o", "{dir}/m.grucy", "--checkpoint",
                                           "{dir}/nope/ck-{{epoch}}.grucy"], 2,
                                  "--checkpoint {dir}/nope/ck-{{epoch}}.grucy"),
    "seed-negative": (TRAIN + ["--seed", "-1", "-o", "m.grucy"], 2,
                      "argument --seed: must be >= 0, got -1"),
    "epochs-zero": (TRAIN + ["--epochs", "0", "-o", "m.grucy"], 2,
                    "argument --epochs: must be >= 1, got 0"),
    "lr-nan": (TRAIN + ["--lr", "nan", "-o", "m.grucy"], 2,
               "argument --lr: must be a finite number"),
    "column-out-of-range": (["train", "--csv", "{two}", "--column", "7", "-o", "m.grucy"],
                            2, "column 7 is out of range: {two} has 2 columns"),
    "prompt-with-a-forecaster": (["predict", "{model}", "--values", "1,2,3,4,5",
                                  "--prompt", "def "], 2,
                                 "--prompt does not apply to a Forecaster"),
    "predict-on-a-checkpoint": (["predict", "{ckpt}"], 2,
                                "{ckpt} is a training checkpoint (of a Forecaster run), "
                                "not a saved model: continue that run with 'grucy train "
                                "<the same options> --resume {ckpt}'"),
    "unknown-command": (["fly"], 2, "argument COMMAND: invalid choice: 'fly'"),
    # one line without a warning printed before it (float32 overflow of the history)
    "predict-values-too-large": (["predict", "{model}", "--values", ",".join(["1e308"] * 6)],
                                 2, "too large for float32; rescale y"),
    # what the command cannot pass: covariates, several series (it asked for them)
    "predict-with-covariates": (["predict", "{fcov}", "--values", "1,2,3,4,5"], 2,
                                "was fitted with 2 covariates, which it needs"),
    "predict-several-series": (["predict", "{ftwo}", "--values", "1,2,3,4,5"], 2,
                               "was fitted on 2 series at once; grucy predict reads one"),
}


@pytest.mark.parametrize("case", sorted(PROCESS_MISTAKES))
def test_a_mistake_is_one_line_in_a_real_process(files, case):
    argv, expected_status, message = PROCESS_MISTAKES[case]
    status, out, err = _grucy_process(_format(argv, files), cwd=files["dir"])
    _one_line_error(status, out, err, expected_status, _format([message], files)[0])
    assert "Training" not in out  # refused before any training started


def test_demo_classify_without_scikit_learn_says_how_to_install(files):
    status, out, err = _grucy_process(["demo", "classify"], cwd=files["dir"],
                                      hide=("sklearn",))
    _one_line_error(status, out, err, 1, "the classify demo needs scikit-learn")
    assert "pip install scikit-learn" in err and out == ""


def test_an_unwritable_output_folder_is_refused_before_training(files, tmp_path):
    target = Path("/sys") if os.path.isdir("/sys") else None
    try:  # /sys refuses new files even to root, where a chmod'ed folder would not
        if target is None:
            raise OSError
        os.close(os.open(target / "grucy-probe", os.O_CREAT | os.O_WRONLY))
    except OSError:
        pass
    else:  # pragma: no cover - a writable /sys
        os.unlink(target / "grucy-probe")
        target = None
    if target is None:
        if os.geteuid() == 0:
            pytest.skip("no folder here refuses files to this (root) user")
        target = tmp_path / "locked"
        target.mkdir(mode=0o500)
    status, out, err = _grucy_process(_format(TRAIN, files) + ["-o", str(target / "m.grucy")],
                                      cwd=files["dir"])
    _one_line_error(status, out, err, 2, f"cannot write in {target}")
    assert "Training" not in out


def test_demo_help_shows_a_single_percent_sign(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "30% held out" in " ".join(out.split()) and "%%" not in out


def _console(capsys, argv):
    """``main(argv)`` as the console script runs it: argparse's exits become statuses; an
    exception escaping main would fail the test (it would be a traceback)."""
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    out = capsys.readouterr()
    return status, out.out, out.err


# Further mistakes, in-process (the same main() the console script calls).
MISTAKES = {
    "no-input": (["train", "-o", "x.grucy"], 2, "exactly one of --csv"),
    "both-inputs": (["train", "--csv", "{csv}", "--text", "{text}", "-o", "x.grucy"], 2,
                    "exactly one of --csv"),
    "no-output": (["train", "--csv", "{csv}"], 2, "the following arguments are required: "
                                                  "--output/-o"),
    "unknown-option": (["info", "--bogus"], 2, "unrecognized arguments: --bogus"),
    "column-name-missing": (TRAIN[:3] + ["--column", "nope", "-o", "x.grucy"], 2,
                            "column 'nope' not found"),
    "column-with-gaps": (TRAIN[:3] + ["--column", "other", "-o", "x.grucy"], 2,
                         "(the first on line 9); use --missing drop"),
    "column-all-empty": (["train", "--csv", "{empty}", "--missing", "interpolate", "-o",
                          "x.grucy"], 2, "no values in column 1"),
    "text-missing": (["train", "--text", "{dir}/nope.txt", "-o", "x.grucy"], 2,
                     "cannot read"),
    "lookback-longer-than-the-csv": (TRAIN + ["--lookback", "500", "-o", "x.grucy"], 2,
                                     "holds 150 values; --lookback 500 and --horizon 1 "
                                     "need at least 501"),
    "resume-missing": (TRAIN + ["--resume", "{dir}/nope.ckpt", "-o", "x.grucy"], 2,
                       "--resume {dir}/nope.ckpt: no such file"),
    "epochs-not-an-integer": (TRAIN + ["--epochs", "2.5", "-o", "x.grucy"], 2,
                              "argument --epochs: expected an integer, got '2.5'"),
    "dropout-one": (TRAIN + ["--dropout", "1", "-o", "x.grucy"], 2,
                    "argument --dropout: must be < 1, got 1"),
    "lr-zero": (TRAIN + ["--lr", "0", "-o", "x.grucy"], 2, "argument --lr: must be > 0"),
    "bptt-with-a-series": (TRAIN + ["--bptt", "8", "-o", "x.grucy"], 2,
                           "--bptt does not apply to a Forecaster"),
    "lookback-with-a-text": (["train", "--text", "{text}", "--lookback", "4", "-o",
                              "x.grucy"], 2, "--lookback does not apply to a CharLM"),
    "checkpoint-every-alone": (TRAIN + ["--checkpoint-every", "2", "-o", "x.grucy"], 2,
                               "--checkpoint-every does not apply without --checkpoint"),
    "plot-with-classify": (["demo", "classify", "--plot", "x.png"], 2,
                           "--plot does not apply to the classify demo"),
    "plot-with-lines": (["demo", "lines", "--no-plot"], 2,
                        "--no-plot does not apply to the lines demo"),
    "plot-and-no-plot": (["demo", "--plot", "x.png", "--no-plot"], 2,
                         "give --plot PATH or --no-plot, not both"),
    "demo-seed-negative": (["demo", "--seed", "-3"], 2, "argument --seed: must be >= 0"),
    "predict-missing-file": (["predict", "{dir}/nope.grucy"], 2,
                             "cannot read {dir}/nope.grucy: No such file"),
    "predict-not-grucy": (["predict", "{csv}"], 2, "not a grucy file"),
    "predict-csv-and-values": (["predict", "{model}", "--csv", "{csv}", "--values", "1,2"],
                               2, "not both"),
    "predict-no-history": (["predict", "{model}"], 2, "a Forecaster needs the history"),
    "predict-short-history": (["predict", "{model}", "--values", "1,2"], 2,
                              "--values holds 2 values; this Forecaster reads the last "
                              "lookback=4"),
    "predict-bad-values": (["predict", "{model}", "--values", "1,x"], 2,
                           "--values must be comma-separated numbers"),
    "predict-horizon-zero": (["predict", "{model}", "--values", "1,2,3,4", "--horizon",
                              "0"], 2, "argument --horizon: must be >= 1"),
    "predict-seed-with-a-forecaster": (["predict", "{model}", "--values", "1,2,3,4",
                                        "--seed", "1"], 2,
                                       "--seed does not apply to a Forecaster"),
    "predict-values-with-a-charlm": (["predict", "{lm}", "--values", "1,2"], 2,
                                     "--values does not apply to a CharLM"),
    "predict-prompt-with-text": (["predict", "{lm}", "--text", "{text}", "--prompt", "a"],
                                 2, "--prompt does not apply with --text"),
    "predict-temperature-negative": (["predict", "{lm}", "--temperature", "-1"], 2,
                                     "argument --temperature: must be >= 0"),
    "csv-not-utf8": (["train", "--csv", "{latin1}", "-o", "x.grucy"], 2,
                     "{latin1} is not UTF-8 text"),
    "predict-csv-not-utf8": (["predict", "{model}", "--csv", "{latin1}"], 2,
                             "{latin1} is not UTF-8 text"),
    # "²".isdigit() is True but int("²") fails: a name, not an index
    "column-superscript-digit": (TRAIN[:3] + ["--column", "\u00b2", "-o", "x.grucy"], 2,
                                 "column '\u00b2' not found"),
    # the same path twice would overwrite the data or the model
    "output-is-the-input": (["train", "--csv", "{csv}", "-o", "{csv}"], 2,
                            "--output {csv} is the same file as --csv {csv}"),
    "checkpoint-is-the-output": (TRAIN + ["--checkpoint", "x.grucy", "-o", "x.grucy"], 2,
                                 "--checkpoint x.grucy is the same file as --output "
                                 "x.grucy"),
    "checkpoint-is-the-text": (["train", "--text", "{text}", "--checkpoint", "{text}", "-o",
                                "x.grucy"], 2, "--checkpoint {text} is the same file as "
                                               "--text {text}"),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_a_mistake_is_one_line(capsys, files, monkeypatch, case):
    monkeypatch.chdir(files["dir"])
    argv, expected_status, message = MISTAKES[case]
    status, out, err = _console(capsys, _format(argv, files))
    _one_line_error(status, out, err, expected_status, _format([message], files)[0])
    assert not (files["dir"] / "x.grucy").exists()


def test_the_plot_path_is_checked_before_the_demo_trains(capsys, files, monkeypatch):
    importorskip("matplotlib")
    calls = []
    monkeypatch.setattr(demo.Forecaster, "fit", lambda self, *a, **k: calls.append(a))
    status, out, err = _console(capsys, _format(["demo", "--plot", "{dir}/nope/x.png"],
                                                files))
    _one_line_error(status, out, err, 2, _format(["--plot {dir}/nope/x.png: the "
                                                  "directory {dir}/nope does not exist"],
                                                 files)[0])
    assert calls == [] and out == ""


def test_without_matplotlib_no_plot_path_stops_the_demo(capsys, files, monkeypatch):
    # nothing will be written there, so an unusable path is no reason to refuse
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    monkeypatch.setitem(demo.FORECAST_SETTINGS, "epochs", 1)
    status, out, err = _console(capsys, _format(["demo", "--plot", "{dir}/nope/x.png"],
                                                files))
    assert status == 0 and "matplotlib is not installed" in out and "error" not in err


def test_output_folder_is_checked_before_fit_is_called(capsys, files, monkeypatch):
    calls = []
    monkeypatch.setattr(grucy.Forecaster, "fit", lambda self, *a, **k: calls.append(a))
    status, _, err = _console(capsys, _format(TRAIN + ["-o", "{dir}/nope/m.grucy"], files))
    assert status == 2 and "does not exist" in err and calls == []


def test_a_failure_while_running_is_one_line_with_status_1(capsys, files, monkeypatch):
    def diverge(self, *args, **kwargs):
        raise RuntimeError("every step of the epoch had a NaN or infinite gradient")

    monkeypatch.setattr(grucy.Forecaster, "fit", diverge)
    status, out, err = _console(capsys, _format(TRAIN + ["-o", "{dir}/m.grucy"], files))
    _one_line_error(status, out, err, 1, "NaN or infinite gradient")

    def unexpected(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(grucy.Forecaster, "fit", unexpected)
    status, out, err = _console(capsys, _format(TRAIN + ["-o", "{dir}/m.grucy", "-q"],
                                                files))
    _one_line_error(status, out, err, 1, "OSError: [Errno 28] No space left on device "
                                         "(GRUCY_TRACEBACK=1 shows where)")
    monkeypatch.setenv("GRUCY_TRACEBACK", "1")
    with pytest.raises(OSError, match="No space left"):
        main(_format(TRAIN + ["-o", "{dir}/m.grucy", "-q"], files))


def test_ctrl_c_is_one_line_with_status_130(capsys, files, monkeypatch):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(grucy.Forecaster, "fit", interrupted)
    status, _, err = _console(capsys, _format(TRAIN + ["-o", "{dir}/m.grucy", "-q"], files))
    assert status == 130 and err == "grucy train: interrupted\n"


# -- bench and info ------------------------------------------------------------------------
# grucy bench must run where none of the peers (nor the optional helpers) is installed.
_NO_PEERS = """
import importlib.abc, json, sys
BLOCKED = {"torch", "onnx", "onnxruntime", "keras", "tensorflow", "threadpoolctl",
           "matplotlib", "sklearn", "tqdm", "mpi4py"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked by the test")
sys.meta_path.insert(0, Block())
from grucy.cli import main
status = main(["bench", "--shapes", "2x5x3x4,1x3x2x6", "--seconds", "0.01",
               "--gemm-size", "64", "--threads", "1", "--json"])
assert not BLOCKED & set(m.split(".")[0] for m in sys.modules), sys.modules.keys()
sys.exit(status)
"""


def test_bench_needs_no_peer_and_checks_grucy_against_the_reference(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _NO_PEERS], capture_output=True,
                          text=True, timeout=120, env=_env_with_grucy_on_path(),
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["threads"] == 1 and doc["fma_gflops"] > 0 and doc["sgemm_gflops"] > 0
    assert {"packed", "rows", "blas_core", "blas_threads"} <= set(doc["kernels"])
    assert [(r["shape"], r["mode"]) for r in doc["results"]] == [
        ("2x5x3x4", "train"), ("2x5x3x4", "infer"), ("1x3x2x6", "train"),
        ("1x3x2x6", "infer")]
    for r in doc["results"]:
        assert r["check"] == "ok" and r["max_rel_diff"] < 1e-4
        assert r["grucy_ms"] > 0 and r["numpy_ms"] > 0 and r["repeats"] >= 3
        assert r["pct_fma"] == pytest.approx(100 * r["gflops"] / doc["fma_gflops"])
    assert "bench/bench_gru.py" in doc["full_benchmark"]
    assert list(tmp_path.iterdir()) == []  # prints, writes nothing


def test_bench_report_points_to_the_full_benchmark(capsys):
    threads = grucy.get_num_threads()
    try:
        status, out, _ = run(capsys, ["bench", "--shapes", "2x5x3x4", "--seconds", "0.01",
                                      "--gemm-size", "64", "--threads", "1"])
    finally:
        grucy.set_num_threads(threads)
    assert status == 0
    for text in ("FMA", "SGEMM", "OpenBLAS core", "2x5x3x4", "python bench/bench_gru.py"):
        assert text in out


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "--threads must be a positive integer"),
    (["--threads", "two"], "--threads must be a positive integer"),
    (["--threads", "100000"], "--threads: n must be at most"),
    (["--shapes", "2x5x3"], "'2x5x3' is not BxTxIxH"),
    (["--shapes", "2x5x0x4"], "'2x5x0x4' is not BxTxIxH"),
    (["--seconds", "-1"], "--seconds must be a positive number"),
    (["--seconds", "nan"], "--seconds must be a positive number"),
    (["--gemm-size", "1.5"], "--gemm-size must be a positive integer"),
])
def test_bench_bad_options_are_one_line_errors(capsys, argv, message):
    status, _, err = run(capsys, ["bench", *argv])
    assert status == 2 and err == f"grucy bench: error: {err.split(': error: ', 1)[1]}"
    assert message in err and err.count("\n") == 1


def test_info(capsys):
    status, out, _ = run(capsys, ["info"])
    assert status == 0
    assert f"grucy {grucy.__version__}" in out and "threads: " in out and "BLAS" in out
    status, out, _ = run(capsys, ["info", "--json"])
    info = json.loads(out)
    assert info["threads"] == grucy.get_num_threads()
    assert info["numpy"] == np.__version__
    assert info["blas"] and "scikit-learn" in info["optional"]


def test_info_says_which_kernels_run_on_this_cpu(capsys):
    from grucy import _gru

    kernels = _gru.kernel_info()
    assert kernels["packed"] in ("avx512", "avx2", "portable", "blas")
    assert kernels["rows"] in ("avx512", "avx2", "baseline")
    status, out, _ = run(capsys, ["info", "--json"])
    assert status == 0 and json.loads(out)["kernels"] == kernels
    status, out, _ = run(capsys, ["info"])
    lines = dict(line.strip().split(":", 1) for line in out.splitlines()
                 if line.startswith("  ") and ":" in line and "=" not in line)
    packed = {"avx512": "grucy's GEMM, AVX-512", "avx2": "grucy's GEMM, AVX2",
              "portable": "grucy's GEMM, portable C", "blas": "scipy's BLAS (GRUCY_ISA=blas)"}
    assert lines["products with the weights"].strip() == packed[kernels["packed"]]
    machine = platform.machine()
    baseline = ("baseline x86-64 (SSE2)" if machine in ("x86_64", "AMD64") else
                "baseline ARM64 (NEON)" if machine in ("aarch64", "arm64") else
                f"baseline {machine}")
    rows = {"avx512": "AVX-512", "avx2": "AVX2", "baseline": baseline}
    assert lines["fused per-row passes"].strip() == rows[kernels["rows"]]
    assert lines["OpenBLAS core"].strip() == (kernels["blas_core"] or "none (another BLAS)")


def test_kernel_isa_is_public_and_grucy_isa_chooses_it():
    # issue 19: GRUCY_ISA (read at import) picks the GEMM kernel, grucy.kernel_isa() says
    # which runs; an unknown or unavailable choice is an error naming the variable
    assert grucy.kernel_isa() == grucy._gru.kernel_info()["packed"]
    assert grucy.available_isas()[-1] == "blas" and grucy.kernel_isa() in grucy.available_isas()
    env = _env_with_grucy_on_path()
    code = "import grucy; print(grucy.kernel_isa())"
    for isa in grucy.available_isas():
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, env={**env, "GRUCY_ISA": isa})
        assert proc.returncode == 0 and proc.stdout.strip() == isa, proc.stderr
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**env, "GRUCY_ISA": "neon"})
    assert proc.returncode != 0
    assert "GRUCY_ISA must be one of portable, avx2, avx512, blas" in proc.stderr
    assert "got 'neon'" in proc.stderr


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
    assert "threads: " in grucy_cmd("info")
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


def test_header_option_reads_a_header_of_numbers(capsys, tmp_path):
    # pandas' to_csv(index=False) of an unnamed Series writes the header "0": read as a
    # value by default (a first row of numbers is data), skipped with --header yes
    series = np.sin(np.arange(40) / 3)
    csv = tmp_path / "s.csv"
    csv.write_text("0\n" + "".join(f"{float(v)!r}\n" for v in series))
    model = grucy.Forecaster(lookback=4, hidden_size=3, epochs=1, random_state=0)
    grucy.save(model.fit(series), tmp_path / "f.grucy")
    status, out, _ = run(capsys, ["predict", str(tmp_path / "f.grucy"), "--csv", str(csv),
                                  "--header", "yes"])
    assert status == 0 and float(out) == model.predict(series)[0]
    status, out, _ = run(capsys, ["predict", str(tmp_path / "f.grucy"), "--csv", str(csv)])
    assert status == 0 and float(out) == model.predict(np.r_[0.0, series])[0]
    rows = tmp_path / "rows.csv"
    rows.write_text("0,1,2\n1,2,3\n4,5,6\n")
    reg = grucy.GRURegressor(hidden_size=3, epochs=1, random_state=0)
    grucy.save(reg.fit(np.arange(12.).reshape(4, 3), np.arange(4.)), tmp_path / "r.grucy")
    status, out, _ = run(capsys, ["predict", str(tmp_path / "r.grucy"), "--csv", str(rows),
                                  "--header", "yes"])
    assert status == 0 and len(out.split()) == 2
    status, out, _ = run(capsys, ["predict", str(tmp_path / "r.grucy"), "--csv", str(rows),
                                  "--header", "no"])
    assert status == 0 and len(out.split()) == 3
    status, _, err = run(capsys, ["train", "--text", str(csv), "--header", "yes", "-o",
                                  str(tmp_path / "lm.grucy")])
    assert status == 2 and "--header does not apply to a CharLM" in err


def test_a_ragged_sequence_csv_names_its_row(tmp_path):
    from grucy.cli import CLIError
    from grucy.cli._data import _read_rows
    path = tmp_path / "rows.csv"
    path.write_text("a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(CLIError, match=r"every row must hold the same number of values "
                                       r"\(one sequence per row\); row 3 holds 2, the "
                                       r"first 3"):  # (NumPy's "inhomogeneous shape")
        _read_rows(path)
