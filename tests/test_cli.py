"""The CLI's user errors: one line `mibcore: error: ...` naming the file, key or option, and a
distinct exit code (mibcore.errors); no traceback unless --debug."""
import dataclasses
import importlib
import pickle
import sys

import h5py
import numpy as np
import pytest
import torch

from mibcore.__main__ import main as cli
from mibcore.data import hdf5, make_synthetic

TINY = ["--d", "10", "--hidden", "16", "--synthetic-samples", "16", "--seq-len", "3", "--epochs", "1",
        "--no-progress"]


def error_of(capsys, argv, code):
    """Runs the CLI; checks the exit code and that stderr is one error line; returns it."""
    assert cli(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("mibcore: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def small_h5(path, **changes):
    data = make_synthetic(n_train=4, n_dev=2, n_test=2, seq_len=3, text_dim=5, audio_dim=3, visual_dim=2)
    hdf5.save(data, str(path))
    with h5py.File(path, "a") as f:
        for name, value in changes.items():
            del f[name]
            if value is not None:
                f.create_dataset(name, data=value)
    return str(path)


def mmsa_pickle(path, drop=None):
    rng = np.random.default_rng(0)
    raw = {split: {"text": rng.standard_normal((3, 2, 4)), "audio": rng.standard_normal((3, 2, 3)),
                   "vision": rng.standard_normal((3, 2, 2)), "regression_labels": rng.uniform(-3, 3, 3)}
           for split in ("train", "valid", "test")}
    if drop:
        split, _, key = drop.partition("/")
        del (raw[split] if key else raw)[key or split]
    path.write_bytes(pickle.dumps(raw))
    return str(path)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # (a train command that got far enough would write runs/mib here)


@pytest.mark.parametrize("argv, code, names", [
    (["train", "--lr", "x"], 2, "argument --lr: invalid float value"),
    (["train", "--lr", "inf"], 2, "lr must be a finite number > 0, got inf"),
    (["train", "--beta", "nan"], 2, "beta must be a finite number >= 0, got nan"),
    (["train", "--hidden", "0"], 2, "hidden must be >= 1"),
    (["train", "--mode", "fast"], 2, "argument --mode: invalid choice: 'fast'"),
    (["train", "--device", "nowhere"], 2, "'nowhere' is not a device name"),
    (["train", "--seeds", "1", "1"], 2, "give each seed once"),
    (["train", "--config", "missing.json"], 2, "config missing.json: cannot read it"),
    (["train", "--data", "missing.pkl", *TINY], 3, "'missing.pkl' is neither 'synthetic' nor an existing file"),
    (["train", "--fusion", "fancy", *TINY], 2, "argument --fusion: invalid choice: 'fancy'"),
    (["eval", "missing.pt"], 4, "missing.pt: no such checkpoint file"),
    (["eval", "."], 4, "best.pt: no such checkpoint file"),
    (["convert", "missing.pkl", "out.h5"], 3, "'missing.pkl' is neither"),
    (["convert", "in.pkl", "."], 2, "the output '.' is a directory"),
    (["convert", "in.pkl", "nowhere/out.h5"], 2, "the output's folder 'nowhere' does not exist"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    (["train", "--compile", "fastest", *TINY], 2, "compile must be true, false or a mode (default, reduce-overhead"),
    (["train", "--loss-every", "0", *TINY], 2, "loss_every must be >= 1"),
    (["train", "--cuda-graphs", "--device", "cpu", *TINY], 2,
     "--cuda-graphs needs a CUDA device; this run's device is cpu"),
    (["train", "--cuda-graphs", "--compile", *TINY], 2, "cuda_graphs and compile exclude each other"),
])
def test_usage_mistakes(capsys, argv, code, names):
    assert names in error_of(capsys, argv, code)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda(capsys):
    assert "usable CUDA devices" in error_of(capsys, ["train", "--device", "cuda", *TINY], 2)


@pytest.mark.parametrize("text, names", [
    ("{bad", "not valid JSON"),
    ("[1]", "expected a JSON object"),
    ('{"learning_rate": 1}', "unknown config keys ['learning_rate']"),
    ('{"epochs": "5"}', "epochs must be of type int, got '5'"),
    ('{"cmib": {"commonParams": 3}}', "section 'cmib'"),
])
def test_bad_config_files(tmp_path, capsys, text, names):
    (tmp_path / "c.json").write_text(text)
    assert names in error_of(capsys, ["train", "--config", "c.json"], 2)


def test_bad_data_files(tmp_path, capsys):
    cases = [
        (mmsa_pickle(tmp_path / "no-audio.pkl", drop="valid/audio"), "valid has no 'audio' array"),
        (mmsa_pickle(tmp_path / "no-test.pkl", drop="test"), "missing split 'test'"),
        (small_h5(tmp_path / "no-split.h5", test=None), "missing split 'test'"),
        (small_h5(tmp_path / "no-key.h5", **{"train/audio": None}), "/train has no audio"),
        (small_h5(tmp_path / "nan.h5", **{"dev/visual": np.full((2, 3, 2), np.nan, np.float32)}),
         "dev/visual holds NaN or Inf (12 values)"),
        (small_h5(tmp_path / "empty-split.h5", **{f"dev/{k}": np.zeros((0, 3, 2), np.float32)
                                                   for k in ("text", "audio", "visual")},
                  **{"dev/label": np.zeros(0, np.float32), "dev/id": np.zeros(0, "S1")}), "split 'dev' is empty"),
    ]
    (tmp_path / "truncated.pkl").write_bytes(pickle.dumps({"train": list(range(100))})[:30])
    (tmp_path / "empty.pkl").write_bytes(b"")
    cases += [(str(tmp_path / "truncated.pkl"), "pickle data was truncated"),
              (str(tmp_path / "empty.pkl"), "the file is empty or truncated")]
    for path, names in cases:
        err = error_of(capsys, ["train", "--data", path, *TINY], 3)
        assert path in err and names in err, err
        assert names in error_of(capsys, ["convert", path, str(tmp_path / "out.h5")], 3)


def test_damaged_checkpoints_for_eval(tmp_path, capsys):
    torch.save({"model": {"w": torch.zeros(1000)}, "config": {}}, tmp_path / "best.pt")
    data = (tmp_path / "best.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    for name, names in (("truncated.pt", "damaged or not a checkpoint"), ("empty.pt", "the checkpoint file is empty"),
                        ("foreign.pt", "not a mibcore checkpoint")):
        assert f"{name}: {names}" in error_of(capsys, ["eval", str(tmp_path / name)], 4)


def test_debug_shows_the_traceback(capsys):
    assert cli(["eval", "missing.pt", "--debug"]) == 4
    err = capsys.readouterr().err
    assert "Traceback" in err and "CheckpointError" in err and err.endswith("missing.pt: no such checkpoint file\n")


def test_bench_runs_the_suite_and_writes_its_reports(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    from mibcore.__main__ import _benchmarks

    cases = importlib.import_module(_benchmarks().__name__ + ".cases")
    # The quickest selection: the paper-shaped reparameterize_kl, without its torch.compile provider
    first = next(c for c in cases.all_cases(quick=True) if c.op == "reparameterize_kl" and c.kind == "paper")
    tiny = dataclasses.replace(first, compile=False)
    monkeypatch.setattr(cases, "all_cases", lambda quick=False: [tiny])
    out = tmp_path / "bench"
    assert cli(["bench", "--quick", "--op", "reparameterize_kl", "--repeats", "1", "--device", "cpu",
                "--out", str(out)]) == 0
    assert "reparameterize_kl" in capsys.readouterr().out
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) >= 2 and all("reparameterize_kl" in r for r in rows[1:])
    assert "reparameterize_kl" in (out / "results.md").read_text()
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_help_documents_every_option(capsys):
    from mibcore.train.config import FIELDS, field_help

    assert set(field_help()) == FIELDS  # (each TrainConfig field has its comment: the help text)
    with pytest.raises(SystemExit):
        cli(["train", "-h"])
    out = "".join(capsys.readouterr().out.split())  # (argparse wraps lines, also at hyphens)
    for name in FIELDS:
        assert "".join(f"{field_help()[name]} (default: ".split()) in out, name
    assert "--fusion{concat,addition,multiplication,tensor,low-rank,graph,poe}" in out


def test_optional_dependencies_are_checked_before_the_work(tmp_path, capsys, monkeypatch):
    # .h5 data without h5py: one line naming the package and the extra, before any training
    data = make_synthetic(n_train=8, n_dev=4, n_test=4, seq_len=3, text_dim=4, audio_dim=3, visual_dim=2)
    hdf5.save(data, str(tmp_path / "d.h5"))
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py raises ImportError
    assert cli(["train", "--data", str(tmp_path / "d.h5"), "--out", str(tmp_path / "run")]) == 2
    assert "needs h5py (pip install 'mibcore[data]', or pip install h5py)" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_bench_without_matplotlib_says_so_first_and_writes_the_rest(tmp_path, capsys, monkeypatch):
    from mibcore.__main__ import _benchmarks

    cases = importlib.import_module(_benchmarks().__name__ + ".cases")
    first = next(c for c in cases.all_cases(quick=True) if c.op == "reparameterize_kl" and c.kind == "paper")
    monkeypatch.setattr(cases, "all_cases", lambda quick=False: [dataclasses.replace(first, compile=False)])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "bench"
    assert cli(["bench", "--quick", "--repeats", "1", "--device", "cpu", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "results.png will not be written: matplotlib is not installed" in captured.err
    assert (out / "results.csv").exists() and (out / "results.md").exists() and not (out / "results.png").exists()
