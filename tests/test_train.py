"""Training engine: learning on the synthetic data, exact resume, AMP, CLI, seeds, DDP."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from mibcore.__main__ import main as cli
from mibcore.data import make_synthetic
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


def test_cpu_checkpoint_keeps_the_cpu_rng_state_only(tmp_path):
    config = TrainConfig(model="cmib", fusion="concat", epochs=1, out=str(tmp_path / "run"), **TINY)
    train(config)
    ckpt = torch.load(os.path.join(config.out, "checkpoint.pt"), weights_only=True)
    assert "rng" in ckpt
    if not torch.cuda.is_initialized():
        assert "cuda_rng" not in ckpt


def _fake_cuda(monkeypatch, n_devices=2):
    """torch.cuda as seen by the RNG code of a process that uses n_devices CUDA devices."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n_devices)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all",
                        lambda: [torch.full((16,), i + 1, dtype=torch.uint8) for i in range(n_devices)])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(list(states)))
    return restored


def test_checkpoint_rng_states_include_cuda_where_cuda_is_in_use(monkeypatch, tmp_path):
    from mibcore.train import checkpoint

    restored = _fake_cuda(monkeypatch)
    states = checkpoint.rng_states()
    assert set(states) == {"rng", "cuda_rng"} and len(states["cuda_rng"]) == 2
    torch.save(states, tmp_path / "ckpt.pt")  # as save_checkpoint writes it, read as resume reads it
    checkpoint.restore_rng_states(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    assert len(restored) == 1 and all(torch.equal(a, b) for a, b in zip(restored[0], states["cuda_rng"]))


def test_resume_restores_the_cuda_states_of_the_devices_present(monkeypatch):
    from mibcore.train import checkpoint

    saved = {"rng": torch.get_rng_state(), "cuda_rng": [torch.zeros(16, dtype=torch.uint8)] * 4}
    restored = _fake_cuda(monkeypatch, n_devices=1)
    checkpoint.restore_rng_states(saved)
    assert len(restored) == 1 and len(restored[0]) == 1


def test_old_checkpoints_without_cuda_rng_still_resume(monkeypatch):
    from mibcore.train import checkpoint

    restored = _fake_cuda(monkeypatch)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    expected = torch.rand(3)
    checkpoint.restore_rng_states({"rng": state})  # a checkpoint written before CUDA states were saved
    assert torch.equal(torch.rand(3), expected) and restored == []


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
            "--d", "10", "--hidden", "16", "--synthetic-samples", "64", "--seq-len", "4", "--no-progress"]
    # The default mode, clean, uses z = mu at evaluation, so eval reproduces the run's test metrics.
    assert cli(args) == 0
    metrics = json.load(open(out / "metrics.json"))
    assert {"mae", "corr", "acc2", "f1", "acc7", "baseline_mae"} <= set(metrics)
    capsys.readouterr()
    assert cli(["eval", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["mae"] == pytest.approx(metrics["mae"], rel=1e-5)


def test_config_file_mmsa_style(tmp_path):
    from mibcore.train.config import load_config

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
    assert "sample std (n - 1)" in table  # (papers report the sample std; labelled as such)
    maes = [json.loads((tmp_path / f"seed-{s}" / "metrics.json").read_text())["mae"] for s in (0, 1)]
    assert summary["mae"][1] == pytest.approx(abs(maes[0] - maes[1]) / 2**0.5)  # (n - 1 = 1; population: / 2)


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


# --- Robustness: validation, divergence, resume provenance, exact eval, the run folder ---

from mibcore.errors import CheckpointError, DataError, DivergedError  # noqa: E402

ONE = dict(TINY, synthetic_samples=32, epochs=1)


@pytest.fixture(scope="module")
def faithful_run(tmp_path_factory):
    """A finished one-epoch faithful-mode run (tests copy it before changing it)."""
    config = TrainConfig(model="cmib", mode="faithful", out=str(tmp_path_factory.mktemp("run") / "run"), **ONE)
    train(config)
    return config


def copy_of(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run.out, out)
    return dataclasses.replace(run, out=str(out))


def test_eval_reproduces_a_faithful_run_exactly(faithful_run, capsys):
    capsys.readouterr()
    assert cli(["eval", faithful_run.out]) == 0
    assert json.loads(capsys.readouterr().out) == json.load(open(os.path.join(faithful_run.out, "metrics.json")))


def test_eval_of_the_resume_checkpoint_is_refused(faithful_run, capsys):
    assert cli(["eval", os.path.join(faithful_run.out, "checkpoint.pt")]) == 4
    assert "is the resume checkpoint of a run; evaluate its folder" in capsys.readouterr().err


def test_resume_with_another_config_is_refused(faithful_run, tmp_path):
    run = copy_of(faithful_run, tmp_path)
    with pytest.raises(CheckpointError, match=r"another config \(fusion 'concat' -> 'tensor'; lr 0.001 -> 0.01\)"):
        train(dataclasses.replace(run, lr=0.01, fusion="tensor"))
    # --restart: the run starts over with the new config, which best.pt then records
    result, _ = train(dataclasses.replace(run, lr=0.01, resume=False))
    assert result["epochs_run"] == 1
    assert torch.load(os.path.join(run.out, "best.pt"), weights_only=True)["config"]["lr"] == 0.01


def test_damaged_checkpoint_is_reported_and_restart_cleans_the_folder(faithful_run, tmp_path):
    run = copy_of(faithful_run, tmp_path)
    checkpoint = os.path.join(run.out, "checkpoint.pt")
    with open(checkpoint, "r+b") as f:
        f.truncate(os.path.getsize(checkpoint) // 2)
    stale = os.path.join(run.out, "tmp-killed.part")  # what a write killed mid-way leaves
    open(stale, "wb").write(b"partial")
    with pytest.raises(CheckpointError, match="checkpoint.pt: damaged or not a checkpoint .*--restart"):
        train(dataclasses.replace(run, epochs=2))
    assert not os.path.exists(stale)  # deleted at the start, under the lock
    train(dataclasses.replace(run, resume=False))
    assert json.load(open(os.path.join(run.out, "history.json")))[0]["epoch"] == 1


def test_nan_features_are_refused(tmp_path):
    data = make_synthetic(n_train=8, n_dev=2, n_test=2, seq_len=3)
    data["train"]["audio"][3, 1, 2] = np.nan
    with pytest.raises(DataError, match=r"train/audio holds NaN or Inf \(1 values\)"):
        train(TrainConfig(out=str(tmp_path), **ONE), data=data)


def test_diverging_loss_stops_at_its_epoch_and_step(tmp_path, monkeypatch):
    from mibcore.models.mib import MIB

    calls, loss = [], MIB.loss
    monkeypatch.setattr(MIB, "loss", lambda self, out, target: loss(self, out, target) * (
        float("nan") if calls.append(1) or len(calls) == 3 else 1.0))  # the third step: epoch 2, step 1 of 2
    with pytest.raises(DivergedError, match="loss is nan at epoch 2, step 1 of 2 .* keeps the checkpoint of epoch 1"):
        train(TrainConfig(model="plain", out=str(tmp_path), **dict(ONE, epochs=2)))
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["state"]["epoch"] == 1
    assert not os.path.exists(tmp_path / "metrics.json")


def test_a_second_training_on_a_locked_folder_fails_at_once(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mibcore.train.run_folder import lock_run_folder\n"
         f"with lock_run_folder({str(out)!r}):\n    print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline() == "locked\n"
        args = ["train", "--out", str(out), "--d", "10", "--hidden", "16", "--epochs", "1", "--no-progress"]
        start = time.monotonic()
        assert cli(args) == 6
        assert time.monotonic() - start < 10  # at once: before the data is loaded or a model built
        assert f"is in use by another training (PID {holder.pid} on " in capsys.readouterr().err
    finally:
        holder.kill()  # as kill -9 would: the OS releases the lock
        holder.wait()
    from mibcore.train.run_folder import lock_run_folder

    with lock_run_folder(str(out)):
        pass


# --- What a run shows and writes: epoch lines, curves, configs ---

def png_size(path):
    """(width, height) of a PNG file, from its IHDR chunk; fails if it is not a PNG."""
    data = open(path, "rb").read(24)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_epoch_lines_curves_and_the_plot_command(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    config = TrainConfig(model="plain", out=str(tmp_path / "a"), **dict(ONE, epochs=2, progress=True))
    train(config)  # progress on, but stderr is no terminal here: the lines replace the bar
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  train loss "), lines
    assert " dev mae " in lines[1] and " corr " in lines[1] and " s  best mae " in lines[1], lines
    assert png_size(tmp_path / "a" / "curves.png") == (1000, 400)
    train(dataclasses.replace(config, out=str(tmp_path / "b"), epochs=1, quiet=True))
    assert capsys.readouterr().err == ""
    out = tmp_path / "both.png"
    assert cli(["plot", str(tmp_path / "a"), str(tmp_path / "b" / "history.json"), "--out", str(out)]) == 0
    assert png_size(out) == (1000, 400)
    assert cli(["plot", str(tmp_path / "missing")]) == 2
    assert "is not a run folder with a history.json" in capsys.readouterr().err


def test_print_config_round_trips_through_json_and_yaml(tmp_path, capsys, monkeypatch):
    yaml = pytest.importorskip("yaml")
    monkeypatch.chdir(tmp_path)
    from mibcore.train.config import load_config

    # MMSA-style sections in YAML; 1e-3 (no dot) is a string to PyYAML, read as the number
    (tmp_path / "c.yaml").write_text("model: cmib\nlr: 1e-3\nno_ib: [audio]\n"
                                     "cmib:\n  commonParams: {beta: 0.01}\n  datasetParams:\n"
                                     "    synthetic: {d: 10, hidden: 16}\n")
    for fmt, name in (("yaml", "r.yaml"), ("json", "r.json")):
        assert cli(["train", "--config", str(tmp_path / "c.yaml"), "--epochs", "3", "--print-config", fmt]) == 0
        printed = capsys.readouterr().out
        values = yaml.safe_load(printed) if fmt == "yaml" else json.loads(printed)
        assert values["lr"] == 1e-3 and values["beta"] == 0.01 and values["d"] == 10 and values["epochs"] == 3
        (tmp_path / name).write_text(printed)
        assert load_config(str(tmp_path / name)) == load_config(str(tmp_path / "c.yaml"), {"epochs": 3})
    assert not os.path.exists("runs")  # nothing trained
    (tmp_path / "bad.yaml").write_text("lr: [1\n")
    assert cli(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "bad.yaml: not valid YAML" in capsys.readouterr().err


def test_a_yaml_config_without_pyyaml_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml raises ImportError
    (tmp_path / "c.yml").write_text("lr: 0.01\n")
    assert cli(["train", "--config", str(tmp_path / "c.yml")]) == 2
    assert "a YAML config needs pyyaml (pip install 'mibcore[yaml]', or pip install pyyaml)" in capsys.readouterr().err


def test_how_a_run_ended_is_said(tmp_path, capsys, monkeypatch):
    # Early stopping, and a rerun of a finished run, say so on stderr (not silently).
    # (lr 1e-30: the weights do not move, so epoch 2's dev metric is no better and patience 1 stops it)
    config = TrainConfig(model="plain", out=str(tmp_path / "a"), **dict(ONE, epochs=6, patience=1, lr=1e-30))
    train(config)
    err = capsys.readouterr().err
    assert "stopped early after epoch 2 of 6" in err and "(--patience); the best epoch is 1" in err
    train(config)  # a rerun: nothing left to train
    err = capsys.readouterr().err
    assert "had already" in err and "nothing trained; these are its metrics" in err and "--restart" in err
    # bf16 autocast on a CPU that emulates bf16: a warning, once
    import mibcore.train.engine as engine

    monkeypatch.setattr(engine, "native_bf16", lambda: False)
    train(TrainConfig(model="plain", out=str(tmp_path / "b"), amp="bf16", **dict(ONE, epochs=1)))
    assert capsys.readouterr().err.count("--amp bf16 on a CPU without native bf16") == 1
