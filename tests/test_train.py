"""Training engine: learning on the synthetic data, exact resume, AMP, CLI, seeds, DDP."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from mibcore.__main__ import main as cli
from mibcore.train import TrainConfig, evaluate_checkpoint, regression_metrics, train, train_seeds

TINY = dict(d=10, hidden=32, synthetic_samples=160, seq_len=6, batch_size=16, progress=False)


def test_cmib_learns_the_planted_signal(tmp_path):
    config = TrainConfig(model="cmib", epochs=6, lr=3e-3, out=str(tmp_path), **TINY)
    result, _ = train(config)
    test = result["test"]
    # "clearly below": at most 70% of predicting the training-label mean
    assert test["mae"] < 0.7 * test["baseline_mae"], test
    assert test["corr"] > 0.5
    assert json.load(open(tmp_path / "metrics.json"))["mae"] == test["mae"]


def state_of(path):
    return torch.load(os.path.join(path, "checkpoint.pt"), weights_only=True)["model"]


def test_interrupted_run_resumes_exactly(tmp_path):
    full = TrainConfig(model="cmib", fusion="tensor", epochs=3, out=str(tmp_path / "full"), **TINY)
    train(full)
    part = dataclasses.replace(full, out=str(tmp_path / "part"), epochs=2)
    train(part)  # "interrupted" after epoch 2 ...
    train(dataclasses.replace(part, epochs=3))  # ... and resumed from its checkpoint
    a, b = state_of(full.out), state_of(part.out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.load(open(os.path.join(part.out, "history.json")))
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_compiled_training_learns_and_resumes_exactly(tmp_path):
    # The CLI's --compile run, and the same run interrupted after epoch 2 and resumed.
    args = ["train", "--model", "cmib", "--epochs", "4", "--lr", "3e-3", "--d", "10", "--hidden", "32",
            "--synthetic-samples", "160", "--seq-len", "6", "--batch-size", "16", "--no-progress", "--compile",
            "--out", str(tmp_path / "full")]
    assert cli(args) == 0
    metrics = json.load(open(tmp_path / "full" / "metrics.json"))
    assert metrics["mae"] < 0.8 * metrics["baseline_mae"], metrics
    full = state_of(tmp_path / "full")
    assert not [k for k in full if "_orig_mod" in k]
    part = TrainConfig(model="cmib", epochs=2, lr=3e-3, compile=True, out=str(tmp_path / "part"), **TINY)
    train(part)
    train(dataclasses.replace(part, epochs=4))
    resumed = state_of(part.out)
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)


def test_dev_best_is_the_best_dev_epoch_not_the_last(tmp_path):
    # patience=1 stops after the first epoch that does not improve: the last epoch is not the best
    config = TrainConfig(model="plain", epochs=12, patience=1, lr=3e-2, out=str(tmp_path), **TINY)
    result, _ = train(config)
    history = json.load(open(tmp_path / "history.json"))
    assert result["epochs_run"] == len(history) < config.epochs
    best = min(history, key=lambda h: h["dev"]["mae"])  # the first of equal scores, as the engine keeps
    assert best["epoch"] != history[-1]["epoch"]
    assert result["dev_best"] == best["dev"] and result["best_epoch"] == best["epoch"]
    # best.pt holds that epoch's weights
    assert evaluate_checkpoint(str(tmp_path), split="dev")["mae"] == pytest.approx(best["dev"]["mae"], rel=1e-6)


def test_bf16_autocast_run(tmp_path):
    result, _ = train(TrainConfig(model="lmib", fusion="low-rank", epochs=1, amp="bf16", out=str(tmp_path), **TINY))
    assert np.isfinite(result["test"]["mae"])


def test_emotion_run(tmp_path):
    result, _ = train(TrainConfig(model="emib", data="synthetic-emotion", epochs=1, out=str(tmp_path), **TINY))
    assert 0.0 <= result["test"]["mean_f1"] <= 1.0 and "class0_acc" in result["test"]


def test_cli_train_writes_the_metrics_and_eval_reads_them(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "cmib", "--fusion", "tensor", "--data", "synthetic", "--epochs", "1", "--out", str(out),
            "--d", "10", "--hidden", "16", "--synthetic-samples", "64", "--seq-len", "4", "--no-progress",
            "--mode", "clean"]  # clean: z = mu at evaluation, so eval reproduces the run's test metrics
    assert cli(args) == 0
    metrics = json.load(open(out / "metrics.json"))
    assert {"mae", "corr", "acc2", "f1", "acc7", "baseline_mae"} <= set(metrics)
    capsys.readouterr()
    assert cli(["eval", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["mae"] == pytest.approx(metrics["mae"], rel=1e-5)


def test_config_file_mmsa_style(tmp_path):
    from mibcore.train.engine import load_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"cmib": {"commonParams": {"beta": 0.01},
                                         "datasetParams": {"synthetic": {"lr": 0.005}}}}))
    config = load_config(str(path), {"model": "cmib"})
    assert config.beta == 0.01 and config.lr == 0.005
    path.write_text(json.dumps({"learning_rate": 1}))
    with pytest.raises(ValueError, match="unknown config keys"):
        load_config(str(path))


def test_seeds_table(tmp_path):
    summary = train_seeds(TrainConfig(model="plain", epochs=1, out=str(tmp_path), **TINY), [0, 1])
    assert "mae" in summary and summary["mae"][1] >= 0
    table = (tmp_path / "results.md").read_text()
    assert "| mae |" in table and (tmp_path / "seed-1" / "metrics.json").exists()


def test_regression_metrics_by_hand():
    pred = np.array([0.4, -1.2, 2.9, 0.1])
    label = np.array([1.0, -1.0, 0.0, -0.4])
    m = regression_metrics(pred, label, train_label_mean=0.5)
    nz = label != 0
    assert m["mae"] == pytest.approx(np.mean(np.abs(pred[nz] - label[nz])))
    assert m["acc2"] == pytest.approx(2 / 3)  # 0.4 vs 1.0 ok, -1.2 vs -1.0 ok, 0.1 vs -0.4 wrong
    assert m["acc7"] == pytest.approx(np.mean(np.round(np.clip(pred, -3, 3)) == np.round(label)))
    assert m["has0_acc2"] == pytest.approx(0.75)  # label 0 counts as non-negative: only 0.1 vs -0.4 is wrong
    assert m["baseline_mae"] == pytest.approx(np.mean(np.abs(0.5 - label[nz])))


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="needs torchrun")
def test_ddp_two_processes_match_one(tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    # (No --d: torchrun's own parser would take it for an ambiguous abbreviation.)
    common = ["--model", "plain", "--beta", "0", "--no-dropouts", "--epochs", "2", "--batch-size", "16",
              "--hidden", "16", "--synthetic-samples", "64", "--seq-len", "4", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "mibcore", "train", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "mibcore", "train", *common,
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = state_of(tmp_path / "one"), state_of(tmp_path / "two")
    # Float sums in another order differ by ulps, which Adam's normalization of tiny gradients
    # can grow to ~1e-4 over the 8 steps; the weights themselves move by ~8e-3 (8 steps x lr).
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=5e-4)
