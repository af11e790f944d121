"""Outputs, the run folder and resume, as a careless or hostile user meets them: writes through
links, outputs that are not files, a read-only or full file system, Ctrl-C, sizes the machine
cannot hold, backends and devices that do not exist, checkpoints and data that do not fit the
run. Each is one line `mibcore: error: ...` with its exit code (mibcore.errors), never a traceback."""
import errno
import importlib
import json
import os
import shutil
import stat

import h5py
import numpy as np
import pytest
import torch

import mibcore.__main__ as main_module
from mibcore import backends
from mibcore._io import atomic_write_text
from mibcore.errors import StorageError, UsageError
from tests.test_cli import TINY, error_of, small_h5

RUN = [*TINY, "--model", "plain", "--quiet"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def weights(run, name="checkpoint.pt"):
    return torch.load(os.path.join(run, name), weights_only=True)


def assert_same_weights(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- 6. Outputs written through links; outputs that are not files ---

def test_a_write_through_a_symlink_updates_its_target_and_keeps_the_link(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "notes.txt"
    target.write_text("old")
    target.chmod(0o600)
    (tmp_path / "notes.txt").symlink_to(target)
    atomic_write_text(str(tmp_path / "notes.txt"), "new")
    assert (tmp_path / "notes.txt").is_symlink() and target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # the file keeps its mode
    assert os.listdir(tmp_path / "real") == ["notes.txt"]  # the temporary was beside the target, and is gone


def test_outputs_that_are_not_regular_files_are_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "fifo")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for name, says in (("fifo", "is a fifo"), ("folder", "is a directory"), ("link", "is a fifo (through links"),
                       ("loop", "cannot write there")):
        with pytest.raises(UsageError) as refused:
            atomic_write_text(str(tmp_path / name), "x")
        assert str(refused.value).startswith(str(tmp_path / name)) and says in str(refused.value), refused.value
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode) and (tmp_path / "link").is_symlink()


def history_file(path):
    path.write_text(json.dumps([{"epoch": 1, "train_loss": 1.0, "dev": {"mae": 0.5}}]))
    return str(path)


def test_plot_out_through_a_link_and_plot_out_a_directory(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    history = history_file(tmp_path / "history.json")
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "curves.png").write_bytes(b"old")
    (tmp_path / "curves.png").symlink_to(tmp_path / "figs" / "curves.png")
    assert main_module.main(["plot", history, "--out", "curves.png"]) == 0
    assert (tmp_path / "curves.png").is_symlink()
    assert (tmp_path / "figs" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    err = error_of(capsys, ["plot", history, "--out", "figs"], 2)
    assert "figs is a directory, not a file to write" in err


# --- 7. Run-folder and OS errors are one line ---

@pytest.mark.parametrize("out, code, says", [
    ("afile", 2, "--out 'afile' is a file, not a run folder"),
    ("afile/run", 2, "--out 'afile/run' cannot be a folder (Not a directory"),
    ("", 2, "out must name the run folder"),
    ("dangling", 2, "--out 'dangling' is a link to 'nowhere', which does not exist"),
])
def test_out_that_cannot_be_a_run_folder(tmp_path, capsys, out, code, says):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "dangling").symlink_to("nowhere")
    assert says in error_of(capsys, ["train", *RUN, "--out", out], code)
    assert (tmp_path / "afile").read_text() == "x" and not (tmp_path / "nowhere").exists()


def refuse(monkeypatch, module, name, error, when=lambda *args: True):
    """Makes module.name raise OSError(error) for the calls `when` selects (as a read-only or full
    file system would: the tests run as root, where chmod does not stop a write)."""
    real = getattr(module, name)

    def refused(*args, **kwargs):
        if when(*args):
            raise OSError(error, os.strerror(error))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, refused)


@pytest.mark.parametrize("name, error, says", [
    ("makedirs", errno.EROFS, "ro/run: cannot create the run folder (Read-only file system)"),
    ("open", errno.EACCES, "ro/run/train.lock: cannot create the lock file (Permission denied)"),
])
def test_a_read_only_out_is_one_line(capsys, monkeypatch, name, error, says):
    if name == "open":
        os.makedirs("ro/run")
    refuse(monkeypatch, os, name, error, when=lambda path, *rest: str(path).startswith("ro"))
    assert says in error_of(capsys, ["train", *RUN, "--out", "ro/run"], 7)


def run_with_a_full_disk(capsys, monkeypatch, out, file, epoch):
    """Trains 2 epochs with the disk full when `file` is saved at `epoch` (1-based); returns the error."""
    saves = {}

    def full(obj, f):
        name = "checkpoint.pt" if "optimizer" in obj else "best.pt"
        saves[name] = saves.get(name, 0) + 1
        return saves[name] == epoch and name == file

    with monkeypatch.context() as patch:
        refuse(patch, torch, "save", errno.ENOSPC, when=full)
        return error_of(capsys, ["train", *RUN, "--epochs", "2", "--out", out], 7)


def test_a_full_disk_during_a_checkpoint_leaves_a_folder_that_resumes(tmp_path, capsys, monkeypatch):
    assert main_module.main(["train", *RUN, "--epochs", "2", "--out", "whole"]) == 0
    # the first checkpoint.pt: no epoch saved, and no best.pt without its checkpoint.pt
    err = run_with_a_full_disk(capsys, monkeypatch, "first", "checkpoint.pt", 1)
    assert "first/checkpoint.pt: cannot write it (No space left on device); no epoch was saved" in err
    assert sorted(os.listdir("first")) == ["train.lock"]
    # best.pt after the first checkpoint.pt: resume takes the best weights from the checkpoint
    err = run_with_a_full_disk(capsys, monkeypatch, "best", "best.pt", 1)
    assert "best/best.pt: cannot write it (No space left on device); rerun the same command to resume" in err
    # the second checkpoint.pt: the first epoch's files stay whole
    err = run_with_a_full_disk(capsys, monkeypatch, "second", "checkpoint.pt", 2)
    assert weights("second")["state"]["epoch"] == 1 and weights("second", "best.pt")["epoch"] == 1
    for run in ("first", "best", "second"):
        assert main_module.main(["train", *RUN, "--epochs", "2", "--out", run]) == 0  # the rerun resumes
        assert not [f for f in os.listdir(run) if f.endswith(".part")]
        assert_same_weights(weights(run)["model"], weights("whole")["model"])
        assert_same_weights(weights(run, "best.pt")["model"], weights("whole", "best.pt")["model"])
        assert json.load(open(f"{run}/metrics.json")) == json.load(open("whole/metrics.json"))


def test_ctrl_c_says_a_rerun_resumes(capsys, monkeypatch):
    from mibcore.models.mib import MIB

    calls, loss = [], MIB.loss

    def interrupted(self, out, target):
        calls.append(1)
        if len(calls) == 2:  # epoch 2 (one step per epoch)
            raise KeyboardInterrupt
        return loss(self, out, target)

    monkeypatch.setattr(MIB, "loss", interrupted)
    args = ["train", *RUN, "--epochs", "2", "--out", "run"]
    assert main_module.main(args) == 130
    err = capsys.readouterr().err
    assert err == "mibcore: error: interrupted; rerun the same command to resume from run/checkpoint.pt\n", err
    assert main_module.main(args) == 0
    assert [h["epoch"] for h in json.load(open("run/history.json"))] == [1, 2]


@pytest.mark.parametrize("option, says", [
    (["--hidden", "10000000000"], "--hidden 10000000000, --d 10 (fusion concat): the model has"),
    (["--seq-len", "1000000000000"], "--seq-len 1000000000000 x --synthetic-samples 16: the synthetic data would"),
])
def test_sizes_the_machine_cannot_hold(capsys, option, says):
    err = error_of(capsys, ["train", *RUN, "--model", "cmib", *option], 2)
    assert says in err and "GiB" in err and "use smaller values" in err


def test_an_allocation_that_fails_anyway_is_one_line(capsys, monkeypatch):
    from mibcore.train import build

    def no_memory(name, seq_len, **sizes):
        if seq_len > 1:  # (not the tiny sample that sizes the data)
            raise MemoryError("Unable to allocate 9 TiB")
        return load(name, seq_len=seq_len, **sizes)

    load = build.load_dataset
    monkeypatch.setattr(build, "load_dataset", no_memory)
    err = error_of(capsys, ["train", *RUN], 2)
    assert "out of memory (Unable to allocate 9 TiB): use smaller --synthetic-samples / --seq-len" in err


def test_unknown_backend_and_meta_device(capsys, monkeypatch):
    monkeypatch.setenv("MIBCORE_BACKEND", "fastest")
    backends.clear_cache()
    try:
        err = error_of(capsys, ["train", *RUN], 2)
        assert "MIBCORE_BACKEND: unknown backend 'fastest'; expected one of reference" in err
    finally:
        monkeypatch.delenv("MIBCORE_BACKEND")
        backends.clear_cache()
    assert "device 'meta': mibcore runs on cpu and cuda" in error_of(capsys, ["train", *RUN, "--device", "meta"], 2)
    assert issubclass(backends.BackendError, UsageError)


def test_bench_unknown_op(capsys, monkeypatch):
    # This checkout's suite (an editable install may map mibcore.benchmarks to another one)
    monkeypatch.setattr(main_module, "_benchmarks", lambda: importlib.import_module("benchmarks"))
    err = error_of(capsys, ["bench", "--op", "tensor_fusio", "--device", "cpu", "--out", "b"], 2)
    assert "bench: unknown --op 'tensor_fusio'; the operators are: dropout," in err and "tensor_fusion" in err
    err = error_of(capsys, ["bench", "--op", "train_step", "--no-train", "--device", "cpu", "--out", "b"], 2)
    assert "no case is left to run" in err
    assert not os.path.exists("b")  # nothing measured


def test_plot_out_in_a_read_only_folder(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    import tempfile

    history = history_file(tmp_path / "history.json")
    refuse(monkeypatch, tempfile, "mkstemp", errno.EROFS)
    assert "curves.png: cannot write it (Read-only file system)" in error_of(capsys, ["plot", history], 7)
    assert issubclass(StorageError, OSError)


# --- 8. Resume checks what it loads ---

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch run of `plain` (tests copy it before changing it)."""
    out = str(tmp_path_factory.mktemp("runs") / "plain")
    assert main_module.main(["train", *RUN, "--out", out]) == 0
    return out


def changed_copy(finished, name="checkpoint.pt", **changes):
    shutil.copytree(finished, "run")
    ckpt = weights("run", name)
    ckpt.update(changes)
    torch.save(ckpt, os.path.join("run", name))
    return "run"


def test_resume_refuses_another_variants_weights(finished, capsys):
    from mibcore import models

    cmib = models.build("cmib", d=10, hidden=16, text_dim=768, audio_dim=74, visual_dim=47, output_dim=1)
    run = changed_copy(finished, model=cmib.state_dict())
    err = error_of(capsys, ["train", *RUN, "--epochs", "2", "--out", run], 4)
    assert "run/checkpoint.pt: its weights are not those of this model" in err and "22 unexpected (" in err
    assert "--restart" in err


def test_resume_refuses_a_corrupt_rng_state(finished, capsys):
    run = changed_copy(finished, rng=torch.zeros(7, dtype=torch.uint8))
    err = error_of(capsys, ["train", *RUN, "--epochs", "2", "--out", run], 4)
    assert "run/checkpoint.pt: its RNG state is missing or damaged" in err


def test_eval_refuses_another_variants_weights_and_an_invalid_stored_seed(finished, capsys):
    run = changed_copy(finished, "best.pt", model={"w": torch.zeros(3)})
    assert "best.pt: not the weights of a mibcore MIB model" in error_of(capsys, ["eval", run], 4)
    config = weights(run, "best.pt")["config"]
    torch.save({"model": {}, "config": dict(config, seed=-1)}, "bad-seed.pt")
    err = error_of(capsys, ["eval", "bad-seed.pt"], 4)
    assert "bad-seed.pt: its stored config is not valid (seed must be in [0, 2^63), got -1)" in err


def test_data_replaced_by_a_file_of_another_width(tmp_path, capsys):
    data = small_h5(tmp_path / "data.h5")
    assert main_module.main(["train", *RUN, "--data", data, "--out", "run"]) == 0
    with h5py.File(data, "a") as f:  # the audio features: 3 -> 4 wide, in every split
        for split in ("train", "dev", "test"):
            audio = f[f"{split}/audio"][()]
            del f[f"{split}/audio"]
            f.create_dataset(f"{split}/audio", data=np.concatenate([audio, audio[..., :1]], axis=2))
    says = f"data {data!r}: its audio features are 4 wide, but run/"
    err = error_of(capsys, ["train", *RUN, "--data", data, "--epochs", "2", "--out", "run"], 4)
    assert says + "checkpoint.pt was trained on 3" in err
    # eval builds the model from best.pt's own weights: the data is what does not fit (exit 3, as predict)
    err = error_of(capsys, ["eval", "run"], 3)
    assert "train/audio has 4 features per step, but the model was trained on 3 audio features" in err


@pytest.mark.parametrize("seeds", [["--seed", "-1"], ["--seed", str(2**63)], ["--seeds", "1", str(2**64)]])
def test_seeds_outside_the_range_are_refused(capsys, seeds):
    assert "seed must be in [0, 2^63)" in error_of(capsys, ["train", *RUN, *seeds, "--out", "run"], 2)
    assert not os.path.exists("run")  # nothing trained, not even the valid seed


def test_the_largest_seed_trains(capsys):
    assert main_module.main(["train", *RUN, "--seed", str(2**63 - 1), "--out", "run"]) == 0
