"""`mibcore predict` (per-sample predictions on any data file) and `eval --drop / --noise /
--robustness` (issue 22, items 1 and 3), through the CLI: exit codes, outputs parsed back."""
import csv
import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from mibcore.__main__ import main as cli
from mibcore.train import TrainConfig, evaluate_checkpoint, predict_file, regression_metrics, train
from mibcore.train.build import load_data
from mibcore.train.perturb import feature_stats, perturb
from tests.test_cli import error_of

TINY = dict(d=10, hidden=16, synthetic_samples=32, seq_len=3, epochs=1, batch_size=16, progress=False, quiet=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch faithful-mode regression run (its evaluation samples z, seeded)."""
    config = TrainConfig(model="cmib", mode="faithful", out=str(tmp_path_factory.mktemp("p") / "run"), **TINY)
    train(config)
    return config


@pytest.fixture(scope="module")
def emotion_run(tmp_path_factory):
    config = TrainConfig(model="plain", data="synthetic-emotion", out=str(tmp_path_factory.mktemp("e") / "run"),
                         **TINY)
    train(config)
    return config


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def read_csv(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def cli_out(capsys, argv):
    capsys.readouterr()
    assert cli(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def samples_npz(path, split, **changes):
    """A .npz of samples (no split prefix) from a split: text, audio, visual, id, and `changes`
    (a value None removes the key)."""
    arrays = {"text": split["text"], "audio": split["audio"], "visual": split["visual"], "id": np.array(split["id"])}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


def test_predict_writes_one_row_per_sample_that_eval_agrees_with(run, capsys):
    out = cli_out(capsys, ["predict", run.out, "--out", "p.csv"])
    assert out == "wrote p.csv: 8 predictions, with labels\n"
    header, rows = read_csv("p.csv")
    assert header == ["id", "prediction", "label"]
    test = load_data(run)["test"]
    assert [r[0] for r in rows] == test["id"]
    pred, label = np.array([[float(x) for x in r[1:]] for r in rows], np.float32).T  # (9 digits: exact)
    np.testing.assert_array_equal(label, test["label"].astype(np.float32))
    # the metrics of the CSV's predictions are eval's (faithful mode: the same seeded samples of z)
    metrics = json.loads(cli_out(capsys, ["eval", run.out]))
    for key, value in regression_metrics(pred, label).items():
        assert value == pytest.approx(metrics[key], abs=1e-6), key
    cli_out(capsys, ["predict", run.out, "--out", "again.csv"])
    assert open("again.csv").read() == open("p.csv").read()  # deterministic
    result = predict_file(run.out)  # the Python API
    assert result["id"] == test["id"] and result["pred"].shape == (8, 1) and result["label"].shape == (8,)
    np.testing.assert_allclose(result["pred"][:, 0].numpy(), pred, rtol=1e-6)


def test_predict_on_unlabeled_samples_of_ones_own(run, capsys, tmp_path):
    test = load_data(run)["test"]
    path = samples_npz(tmp_path / "mine.npz", test, id=np.array([f"clip{i}" for i in range(8)]))
    assert cli_out(capsys, ["predict", run.out, "--data", path, "--out", "mine.csv", "--batch-size", "3"]) == \
        "wrote mine.csv: 8 predictions, no labels\n"
    header, rows = read_csv("mine.csv")
    assert header == ["id", "prediction"] and [r[0] for r in rows] == [f"clip{i}" for i in range(8)]
    clean = dataclasses.replace(run, mode="clean")  # clean mode (z = mu): independent of the batch size
    torch.save({**torch.load(os.path.join(run.out, "best.pt"), weights_only=True),
                "config": dataclasses.asdict(clean)}, tmp_path / "clean.pt")
    a = predict_file(str(tmp_path / "clean.pt"), path, batch_size=3)
    b = predict_file(str(tmp_path / "clean.pt"), path, batch_size=256)
    assert a["label"] is None
    torch.testing.assert_close(a["pred"], b["pred"], rtol=1e-5, atol=1e-6)
    # utterance-level features [N, D] (read as T = 1)
    flat = samples_npz(tmp_path / "flat.npz", test, **{m: test[m][:, -1] for m in ("text", "audio", "visual")},
                       id=None)
    assert predict_file(run.out, flat)["id"] == [str(i) for i in range(8)]


def test_predict_emotion_writes_class_probabilities(emotion_run, capsys):
    cli_out(capsys, ["predict", emotion_run.out, "--split", "dev", "--out", "e.csv"])
    header, rows = read_csv("e.csv")
    classes = (len(header) - 1) // 2
    assert classes >= 2 and header == ["id", *[f"p_class{c}" for c in range(classes)],
                                       *[f"label_class{c}" for c in range(classes)]]
    probs = np.array([[float(x) for x in r[1 : 1 + classes]] for r in rows])
    assert ((probs > 0) & (probs < 1)).all()
    metrics = json.loads(cli_out(capsys, ["eval", emotion_run.out, "--split", "dev"]))
    label = np.array([[float(x) for x in r[1 + classes :]] for r in rows]) > 0.5
    acc = np.mean((probs > 0.5) == label, axis=0)  # a logit > 0 is a probability > 0.5
    assert metrics["mean_acc"] == pytest.approx(acc.mean())


def test_predict_refuses_data_that_does_not_fit_the_model(run, emotion_run, capsys, tmp_path):
    test = load_data(run)["test"]
    wide = samples_npz(tmp_path / "wide.npz", test, audio=np.zeros((8, 3, 7), np.float32))
    err = error_of(capsys, ["predict", run.out, "--data", wide], 3)
    assert "wide.npz: audio has 7 features per step, but the model was trained on" in err and "audio features" in err
    two = samples_npz(tmp_path / "two.npz", test, label=np.zeros((8, 2), np.float32))
    assert "label holds 2 label columns, but the model predicts regression" in error_of(
        capsys, ["predict", run.out, "--data", two], 3)
    nan = samples_npz(tmp_path / "nan.npz", test, visual=np.full_like(test["visual"], np.nan))
    assert "nan.npz: visual holds NaN or Inf" in error_of(capsys, ["predict", run.out, "--data", nan], 3)
    odd = samples_npz(tmp_path / "odd.npz", test, speech=test["audio"])
    assert "odd.npz: holds speech, not modalities of the model; the model was trained on the modalities text, " \
           "audio, visual" in error_of(capsys, ["predict", run.out, "--data", odd], 3)
    lacking = samples_npz(tmp_path / "lacking.npz", test, visual=None)
    assert "lacking.npz: has no visual; the model was trained on" in error_of(
        capsys, ["predict", run.out, "--data", lacking], 3)
    # a dataset of another task: eval refuses it too, naming the key (not a CheckpointError)
    err = error_of(capsys, ["eval", run.out, "--data", "synthetic-emotion"], 3)
    assert "synthetic-emotion: train/label holds" in err and "label columns, but the model predicts regression" in err


@pytest.mark.parametrize("argv, code, names", [
    (["--batch-size", "0"], 2, "batch size must be an integer >= 1, got 0"),
    (["--out", "."], 2, "predict: the output '.' is a directory"),
    (["--out", "nowhere/p.csv"], 2, "the output's folder 'nowhere' does not exist"),
    (["--split", "valid"], 2, "invalid choice: 'valid'"),
])
def test_predict_usage_mistakes(run, capsys, argv, code, names):
    assert names in error_of(capsys, ["predict", run.out, *argv], code)


def test_predict_checkpoint_mistakes(run, capsys):
    assert "missing.pt: no such checkpoint file" in error_of(capsys, ["predict", "missing.pt"], 4)
    assert "is the resume checkpoint of a run" in error_of(
        capsys, ["predict", os.path.join(run.out, "checkpoint.pt")], 4)


# --- eval --drop / --noise / --robustness ---

def split_npz(path, data, **test_changes):
    """The dataset as a .npz of splits, with some of the test split's arrays replaced."""
    arrays = {f"{s}_{k}": data[s][k] for s in data for k in ("text", "audio", "visual", "label")}
    arrays.update({f"test_{k}": v for k, v in test_changes.items()})
    np.savez(path, **arrays)
    return str(path)


def test_drop_is_the_evaluation_of_the_modality_zeroed_or_imputed(run, capsys, tmp_path):
    data = load_data(run)
    clean = json.loads(cli_out(capsys, ["eval", run.out]))
    dropped = json.loads(cli_out(capsys, ["eval", run.out, "--drop", "audio"]))
    zeroed = split_npz(tmp_path / "zero.npz", data, audio=np.zeros_like(data["test"]["audio"]))
    assert dropped == json.loads(cli_out(capsys, ["eval", run.out, "--data", zeroed])) != clean
    mean = data["train"]["audio"].reshape(-1, data["train"]["audio"].shape[2]).mean(0)
    imputed = split_npz(tmp_path / "mean.npz", data, audio=np.broadcast_to(mean, data["test"]["audio"].shape))
    by_mean = json.loads(cli_out(capsys, ["eval", run.out, "--drop", "audio", "--drop-mode", "mean"]))
    expected = json.loads(cli_out(capsys, ["eval", run.out, "--data", imputed]))
    assert by_mean == pytest.approx(expected, abs=1e-6)
    both = json.loads(cli_out(capsys, ["eval", run.out, "--drop", "audio", "--drop", "visual"]))
    assert both != dropped


def test_noise_is_seeded_and_scaled_by_the_training_std(run, capsys):
    clean = json.loads(cli_out(capsys, ["eval", run.out]))
    assert json.loads(cli_out(capsys, ["eval", run.out, "--noise", "text=0"])) == clean
    noisy = json.loads(cli_out(capsys, ["eval", run.out, "--noise", "text=2"]))
    assert noisy != clean and noisy == json.loads(cli_out(capsys, ["eval", run.out, "--noise", "text=2"]))
    assert noisy == evaluate_checkpoint(run.out, noise={"text": 2.0})  # the Python API
    data = load_data(run)
    stats = feature_stats(data["train"])
    x = data["test"]["text"]
    e = (perturb(data["test"], stats, noise={"text": 2.0}, seed=0)["text"] - x) / stats["text"][1]
    assert abs(e.std() / 2.0 - 1) < 0.1  # (8 x 3 x D draws)


@pytest.mark.parametrize("argv, names", [
    (["--drop", "speech"], "--drop: unknown modality 'speech'; this run's are text, audio, visual"),
    (["--drop-mode", "median"], "invalid choice: 'median'"),
    (["--noise", "audio"], "--noise must be MODALITY=SIGMA (e.g. audio=0.5), got 'audio'"),
    (["--noise", "speech=1"], "--noise: unknown modality 'speech'"),
    (["--noise", "audio=-1"], "--noise audio: the level must be a finite number >= 0"),
    (["--noise", "audio=nan"], "--noise audio: the level must be a finite number >= 0"),
    (["--noise", "audio=1", "--noise", "audio=2"], "--noise names a modality twice"),
    (["--drop", "audio", "--noise", "audio=1"], "--drop and --noise both name audio"),
    (["--robustness", "--drop", "audio"], "--robustness evaluates every --drop and --noise itself"),
    (["--robustness", "--levels", "-1"], "the level must be a finite number >= 0"),
])
def test_robustness_option_mistakes(run, capsys, argv, names):
    assert names in error_of(capsys, ["eval", run.out, *argv], 2)


def test_robustness_table_in_metrics_json_and_results_md(run, capsys, tmp_path):
    import shutil

    folder = str(tmp_path / "run")
    shutil.copytree(run.out, folder)
    before = json.load(open(os.path.join(folder, "metrics.json")))
    out = cli_out(capsys, ["eval", folder, "--robustness", "--levels", "1", "3"])
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
    assert [c.strip() for c in rows[0]] == ["condition", "mae", "corr", "acc2", "f1", "acc7"]
    assert {c.strip() for c in rows[1]} == {"---", "---:"}
    rows[1:] = rows[2:]
    names = [r[0].strip() for r in rows[1:]]
    assert names == ["clean", "drop text", "drop audio", "drop visual", "noise text 1", "noise text 3",
                     "noise audio 1", "noise audio 3", "noise visual 1", "noise visual 3"]
    metrics = json.load(open(os.path.join(folder, "metrics.json")))
    section = metrics.pop("robustness")
    assert metrics == before  # the test metrics are kept
    assert section["levels"] == [1.0, 3.0] and section["drop_mode"] == "zero" and section["split"] == "test"
    assert sorted(section["conditions"]) == sorted(names)  # (metrics.json sorts its keys)
    assert section["conditions"]["clean"] == before  # clean: the run's own test metrics
    assert section["conditions"]["drop audio"] == json.loads(cli_out(capsys, ["eval", folder, "--drop", "audio"]))
    for row in rows[1:]:
        assert float(row[1]) == pytest.approx(section["conditions"][row[0].strip()]["mae"], abs=5e-5)
    assert open(os.path.join(folder, "results.md")).read() == "# Robustness\n\n" + out
    assert not [f for f in os.listdir(folder) if f.endswith(".part")]  # (written atomically)
