"""`mibcore tune` through the CLI: a study's outputs (parsed back), best.yaml retraining the best
trial, grid and pruning, a study continued after a kill and shared by two processes, and the
search-space mistakes (UsageError naming the key). Tiny configs: synthetic data, 1-3 epochs."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

# (CI installs both; the GPU machine has no optuna, and its device check collects every test file)
optuna = pytest.importorskip("optuna")
yaml = pytest.importorskip("yaml")

from mibcore.__main__ import main as cli
from mibcore.train.evaluation import best_epoch, dev_score
from mibcore.tune import report
from tests.test_cli import error_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"d": 10, "hidden": 16, "synthetic_samples": 16, "seq_len": 3, "epochs": 1, "progress": False, "quiet": True}
LR = {"low": "1e-3", "high": "1e-2", "log": True}  # ("1e-3": YAML 1.1 reads it as a string)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these models are tiny, and on a busy machine two threads waiting on each
    other make a tiny epoch ten times slower. (The subprocess gets OMP_NUM_THREADS=1.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config_file(path, search, **changes):
    values = {**TINY, **changes}
    if search is not None:
        values["search"] = search
    path.write_text(yaml.safe_dump(values))
    return str(path)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def load_study(out):
    return optuna.load_study(study_name="mibcore", storage=f"sqlite:///{os.path.abspath(out)}/study.db")


def best_dev_score(run):
    """The dev score of a run's best epoch, from its history.json (the engine's selection rule)."""
    history = json.load(open(os.path.join(run, "history.json")))
    return dev_score(history[best_epoch(history) - 1]["dev"])


def test_a_study_writes_its_outputs_and_best_yaml_retrains(tmp_path, capsys):
    search = {"lr": {"low": 0.001, "high": 0.003, "step": 0.002}, "dropouts": [True, False]}  # a grid of 4
    config = config_file(tmp_path / "c.yaml", search)
    out = tmp_path / "t"
    argv = ["tune", "--config", config, "--trials", "2", "--seeds", "0", "1", "--sampler", "grid", "--out", str(out)]
    assert cli(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = read_csv(out / "results.csv")
    assert [r["state"] for r in rows] == ["complete", "complete"] and summary["trials"] == {"complete": 2}
    for r in rows:  # the objective: the mean and sample std over seeds of each run's best dev MAE
        scores = [best_dev_score(out / f"trial-{r['trial']}" / f"seed-{s}") for s in (0, 1)]
        assert r["objective"] == "dev MAE" and r["n"] == "2"
        assert float(r["mean"]) == pytest.approx(np.mean(scores))
        assert float(r["sample_std"]) == pytest.approx(np.std(scores, ddof=1))
        assert r["dropouts"] in ("True", "False") and float(r["lr"]) in (0.001, 0.003)
    assert len({(r["lr"], r["dropouts"]) for r in rows}) == 2  # two points of the grid
    assert float(rows[0]["mean"]) <= float(rows[1]["mean"])  # best first
    best = summary["best"]
    assert best["trial"] == int(rows[0]["trial"]) and best["mean"] == pytest.approx(float(rows[0]["mean"]))
    importance = read_csv(out / "importance.csv")
    assert {r["param"] for r in importance} == {"lr", "dropouts"}
    assert sum(float(r["importance"]) for r in importance) == pytest.approx(1.0)
    assert importance[0]["method"] == summary["importance_method"] in ("fANOVA", "PED-ANOVA")
    assert (out / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    assert "sample std (n - 1)" in md and f"Parameter importance ({summary['importance_method']}" in md
    # best.yaml reruns the best trial (its first seed), to the same numbers
    assert summary["best_config"] == str(out / "best.yaml")
    assert cli(["train", "--config", str(out / "best.yaml")]) == 0
    rerun = json.load(open(out / "best" / "metrics.json"))
    assert rerun == json.load(open(out / f"trial-{best['trial']}" / "seed-0" / "metrics.json"))
    # the same command again: the study is done, nothing trains; another config is refused
    capsys.readouterr()
    assert cli(argv) == 0
    assert "already has 2 finished trials" in capsys.readouterr().err and len(load_study(out).trials) == 2
    changed = config_file(tmp_path / "c.yaml", search, epochs=2)
    assert "differs in config.epochs" in error_of(capsys, [*argv[:2], changed, *argv[3:]], 2)


def test_hopeless_trials_are_pruned(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(optuna.pruners.MedianPruner, "prune", lambda self, study, trial: True)
    monkeypatch.setattr(report, "available", lambda module: False)  # neither scikit-learn nor matplotlib
    config = config_file(tmp_path / "c.yaml", {"lr": LR}, epochs=2, data="synthetic-emotion")
    assert cli(["tune", "--config", config, "--trials", "2", "--out", "t"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"] == {"pruned": 2} and summary["best"] is None
    for trial in load_study("t").trials:  # each reported its first epoch's 1 - dev mean F1, and stopped there
        history = torch.load(f"t/trial-{trial.number}/checkpoint.pt", weights_only=True)["state"]["history"]
        assert [h["epoch"] for h in history] == [1]
        assert trial.intermediate_values == {1: pytest.approx(1 - history[0]["dev"]["mean_f1"])}
    assert [r["state"] for r in read_csv("t/results.csv")] == ["pruned", "pruned"]
    assert not os.path.exists("t/best.yaml") and "Not computed" in open("t/results.md").read()
    # without scikit-learn the importance is PED-ANOVA's; without matplotlib no plot, and a note
    assert summary["importance_method"] == "PED-ANOVA" and not os.path.exists("t/tune.png")
    assert summary["notes"] == ["no tune.png: matplotlib is not installed (pip install 'mibcore[plot]')"]


def _wait(condition, what, process, poll=0.02, timeout=240):
    """Polls condition() until it is true; fails when the process ends or the time is up."""
    end = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the tune process ended ({process.returncode}) before {what}: " + open(
            "other.err").read()[-2000:]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(poll)


def _trials(state=None):
    return [t for t in load_study("t").get_trials(deepcopy=False) if state is None or t.state == state]


def _folders():
    return {name for name in os.listdir("t") if name.startswith("trial-")} if os.path.isdir("t") else set()


def test_two_processes_share_a_study_and_a_killed_one_resumes(tmp_path, capsys):
    config = config_file(tmp_path / "c.yaml", {"lr": LR}, epochs=3)
    argv = ["tune", "--config", config, "--out", "t", "--no-prune"]
    other = subprocess.Popen([sys.executable, "-m", "mibcore", *argv, "--trials", "50"],
                             env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                             stderr=open("other.err", "w"))
    complete = optuna.trial.TrialState.COMPLETE
    try:
        _wait(lambda: _folders(), "its first trial", other)
        # this process joins the study while the other one trains (for one trial or so: --timeout 1)
        assert cli([*argv, "--trials", "50", "--timeout", "1"]) == 0
        _wait(lambda: other.pid in {t.user_attrs["worker"]["pid"] for t in _trials(complete)},
              "a complete trial of its own", other, poll=0.2)
        assert {t.user_attrs["worker"]["pid"] for t in _trials(complete)} == {other.pid, os.getpid()}
        # kill the other process in the middle of its next trial (after an epoch's checkpoint)
        started = _folders()
        _wait(lambda: any(os.path.exists(f"t/{f}/checkpoint.pt") and not os.path.exists(f"t/{f}/metrics.json")
                          for f in _folders() - started), "a new trial", other)
        other.send_signal(signal.SIGKILL)
        other.wait()
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    [killed] = _trials(optuna.trial.TrialState.RUNNING)
    finished = {t.number: (t.value, t.datetime_complete) for t in _trials(complete)}
    capsys.readouterr()
    # the same command continues the study: the killed trial is marked failed and run again
    assert cli([*argv, "--trials", str(len(finished) + 1)]) == 0
    assert f"trial {killed.number} was left running by a process that is gone" in capsys.readouterr().err
    trials = {t.number: t for t in _trials()}
    assert trials[killed.number].state == optuna.trial.TrialState.FAIL
    [retry] = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.state == complete and retry.params == killed.params
    assert {n: (t.value, t.datetime_complete) for n, t in trials.items()
            if t.state == complete and n != retry.number} == finished  # no finished trial lost or rerun
    assert len(read_csv("t/results.csv")) == len(trials)


@pytest.mark.parametrize("search, names", [
    (None, "no `search` section"),
    ([], "`search` must map config fields"),
    ({"lrr": LR}, "search.lrr: not a config field"),
    ({"seed": [0, 1]}, "search.seed: cannot be searched"),
    ({"lr": {"low": 0.01, "high": 0.001}}, "search.lr: low must be < high"),
    ({"lr": {"low": 0, "high": 0.1, "log": True}}, "search.lr: a log range needs low > 0"),
    ({"lr": {"low": 0, "high": 0.1}}, "search.lr: 0.0 is not a valid value (lr must be a finite number > 0"),
    ({"lr": {"low": 1e-4, "hi": 1}}, "search.lr: unknown keys ['hi']"),
    ({"lr": {"low": 1e-4, "high": 1e-2, "log": "yes"}}, "search.lr.log: true or false"),
    ({"lr": {"choices": [0.1], "low": 1}}, "search.lr: choices go alone"),
    ({"lr": {"high": 1}}, "search.lr: a range needs low and high (missing low)"),
    ({"d": {"low": 8.5, "high": 32}}, "search.d.low: expected an integer, got 8.5"),
    ({"d": {"low": 10, "high": 30, "step": 7}}, "search.d: high - low (20) is not a multiple of step (7)"),
    ({"dropouts": {"low": 0, "high": 1}}, "search.dropouts: a bool field takes choices"),
    ({"fusion": {"choices": []}}, "search.fusion.choices: a non-empty list"),
    ({"model": ["cmib", "nope"]}, "search.model: 'nope' is not a valid value"),
    ({"d": [10, 10]}, "search.d.choices: each value once"),
    ({"lr": 0.1}, "search.lr: expected {low: L, high: H"),
])
def test_search_mistakes_are_usage_errors(tmp_path, capsys, search, names):
    config = config_file(tmp_path / "c.yaml", search)
    assert names in error_of(capsys, ["tune", "--config", config, "--out", "t"], 2)
    assert not os.path.exists("t")  # found before any trial


@pytest.mark.parametrize("options, names", [
    (["--sampler", "grid"], "search.lr: --sampler grid needs choices or a step"),
    (["--trials", "0"], "--trials must be >= 1"),
    (["--timeout", "0"], "--timeout must be > 0 seconds"),
    (["--seeds", "1", "1"], "give each seed once"),
    (["--storage", "nonsense"], "--storage nonsense: cannot open it"),
])
def test_option_mistakes_are_usage_errors(tmp_path, capsys, options, names):
    config = config_file(tmp_path / "c.yaml", {"lr": LR})
    assert names in error_of(capsys, ["tune", "--config", config, "--out", "t", *options], 2)


def test_without_optuna_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # (an import of it raises ImportError)
    config = config_file(tmp_path / "c.yaml", {"lr": LR})
    assert "mibcore tune needs optuna (pip install 'mibcore[tune]'" in error_of(capsys, ["tune", "--config", config], 2)


def test_train_refuses_a_search_section(tmp_path, capsys):
    config = config_file(tmp_path / "c.yaml", {"lr": LR})
    assert "its `search` section is a search space for `mibcore tune`" in error_of(
        capsys, ["train", "--config", config], 2)


def test_a_trial_with_invalid_model_options_names_its_values(tmp_path, capsys):
    config = config_file(tmp_path / "c.yaml", {"d": [12]})  # (the attention heads, 5, do not divide 12)
    message = error_of(capsys, ["tune", "--config", config, "--out", "t"], 2)
    assert "trial 0 {'d': 12}: invalid model options: d (12) must be divisible by heads (5)" in message
