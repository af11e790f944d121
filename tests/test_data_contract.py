"""Issue 21's data items: the label contract (3), malformed files as data errors (4), size
bombs in HDF5 and npz (5), labels that do not fit the metrics (10), pickles of protocols 0-2 (11)."""
import csv
import os
import pickle
import io
import re
import zipfile

import h5py
import numpy as np
import pytest

from mibcore.__main__ import main as cli
from mibcore.data import budget, hdf5, load_dataset, pickles
from mibcore.errors import DataError
from tests.test_cli import TINY, error_of, small_h5

TRAIN = ["--d", "10", "--hidden", "16", "--epochs", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def mmsa(path, **changes):
    """An MMSA pickle; changes: {"valid/regression_labels": value, ...} (None deletes)."""
    rng = np.random.default_rng(0)
    raw = {split: {"text": rng.standard_normal((3, 2, 4)), "audio": rng.standard_normal((3, 2, 3)),
                   "vision": rng.standard_normal((3, 2, 2)), "regression_labels": rng.uniform(-3, 3, 3)}
           for split in ("train", "valid", "test")}
    for name, value in changes.items():
        split, key = name.split("/")
        raw[split][key] = value
    path.write_bytes(pickle.dumps(raw, protocol=4))
    return str(path)


# Item 3: the label contract

def test_regression_labels_n_by_1_are_regression(tmp_path, capsys):
    rng = np.random.default_rng(1)
    path = small_h5(tmp_path / "col.h5", **{f"{s}/label": rng.uniform(-3, 3, (n, 1)).astype(np.float32)
                                            for s, n in (("train", 4), ("dev", 2), ("test", 2))})
    data = load_dataset(path)
    assert data["train"]["label"].shape == (4,)
    assert cli(["train", "--data", path, *TRAIN]) == 0
    assert '"mae"' in capsys.readouterr().out  # scored as regression, not with emotion metrics


@pytest.mark.parametrize("label, names", [
    (np.full((4, 3), 2.5, np.float32), "train/label is [N, C] = [4, 3]: multi-label targets (BCE), which must lie in [0, 1]"),
    (np.zeros((4, 0), np.float32), "train/label must be [N] or [N, 1] (regression) or [N, C]"),
])
def test_labels_outside_the_contract_are_refused(tmp_path, capsys, label, names):
    path = small_h5(tmp_path / "x.h5", **{"train/label": label})
    err = error_of(capsys, ["train", "--data", path, *TINY], 3)
    assert names in err and path in err


def test_complex_features_are_refused_not_cast(tmp_path, capsys):
    path = small_h5(tmp_path / "c.h5", **{"dev/audio": np.ones((2, 3, 3), np.complex64)})
    assert "dev/audio holds complex numbers (complex64), which are not cast" in error_of(
        capsys, ["convert", path, "out.h5"], 3)
    arrays = {f"{s}_{k}": np.ones((2, 3)) for s in ("train", "dev", "test") for k in ("text", "audio", "visual")}
    arrays.update({f"{s}_label": np.array([0.5, -1.0]) for s in ("train", "dev", "test")}, train_text=np.ones((2, 3), complex))
    np.savez(tmp_path / "c.npz", **arrays)
    assert "train_text holds complex numbers" in error_of(capsys, ["convert", "c.npz", "out.h5"], 3)


# Item 4: malformed files are data errors (exit 3), never tracebacks

def _vlen(n):
    return np.array([np.zeros(k + 1, np.float32) for k in range(n)], dtype=object)


def _h5_cases(tmp_path):
    yield small_h5(tmp_path / "a.h5", **{"train/label": np.zeros((4, 2, 3), np.float32)}), "train/label must be [N] or [N, 1]"
    yield small_h5(tmp_path / "b.h5", **{"dev/label": np.array([b"x", b"y"])}), "dev/label must hold real numbers, got dtype |S1 (byte strings)"
    yield small_h5(tmp_path / "c.h5", **{f"{s}/{k}": np.zeros((n, 0, 2), np.float32) for s, n in
                                         (("train", 4), ("dev", 2), ("test", 2)) for k in ("audio",)}), "train/audio must have T >= 1"
    yield small_h5(tmp_path / "d.h5", **{"test/text": np.zeros((2, 3, 6), np.float32)}), "test/text has 6 features per step but train/text has 5"
    path = small_h5(tmp_path / "e.h5")
    with h5py.File(path, "a") as f:
        f.attrs["mibcore_format"] = [1, 1]
        f["train"].create_dataset("ragged", data=_vlen(4), dtype=h5py.vlen_dtype(np.float32))
    yield path, "mibcore_format=an array of shape (2,)"
    path = small_h5(tmp_path / "f.h5")
    with h5py.File(path, "a") as f:
        del f["train/visual"]
        f["train"].create_dataset("visual", data=_vlen(4), dtype=h5py.vlen_dtype(np.float32))
    yield path, "train/visual must hold real numbers, got dtype object (Python objects or ragged arrays)"


class _Call:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _pickle_cases(tmp_path):
    yield mmsa(tmp_path / "a.pkl", **{"valid/regression_labels": np.zeros((3, 2))}), "valid/regression_labels must be [N] or [N, 1], got shape (3, 2)"
    yield mmsa(tmp_path / "b.pkl", **{"train/text": [np.zeros((2, 4)), np.zeros((3, 4)), np.zeros((1, 4))]}), "train/text is not a regular array (ragged"
    yield mmsa(tmp_path / "c.pkl", **{"test/regression_labels": ["good", "bad", "meh"]}), "test/label must hold real numbers, got dtype <U4 (strings)"
    yield mmsa(tmp_path / "d.pkl", **{"train/audio": _Call(int, "not a number")}), "invalid pickle data (ValueError: invalid literal for int()"
    rows = lambda: [((["a", "b"], np.zeros((2, 3)), np.zeros((2, 4))), "positive", "s0")]  # noqa: E731
    path = tmp_path / "e.pkl"
    path.write_bytes(pickle.dumps({"train": rows(), "dev": rows(), "test": rows()}))
    yield str(path), "train[0]: the label must be one real number, got <U8"


def test_malformed_files_are_data_errors(tmp_path, capsys):
    for path, names in [*_h5_cases(tmp_path), *_pickle_cases(tmp_path)]:
        err = error_of(capsys, ["train", "--data", path, *TINY], 3)
        assert path in err and names in err, err
        assert names in error_of(capsys, ["convert", path, "out.h5"], 3)


def test_widths_are_checked_before_training(tmp_path, capsys):
    path = small_h5(tmp_path / "w.h5", **{"test/visual": np.zeros((2, 3, 7), np.float32)})
    error_of(capsys, ["train", "--data", path, *TINY, "--out", "run"], 3)
    assert not os.path.exists("run/checkpoint.pt")  # refused at load, not after the training


# Item 5: size bombs in HDF5 and npz

def test_hdf5_declaring_terabytes_is_refused_before_reading(tmp_path, capsys):
    path = small_h5(tmp_path / "bomb.h5", **{"train/text": None})
    with h5py.File(path, "a") as f:  # chunks never written: 4 TB described by a few KB
        f["train"].create_dataset("text", shape=(2**36, 3, 5), dtype="f4", chunks=(1, 3, 5), compression="gzip")
    assert os.path.getsize(path) < 100_000
    err = error_of(capsys, ["train", "--data", path, *TINY], 3)
    assert "/train/text declares 68719476736 x 3 x 5 float32 (4.1 TB), more than loading may allocate" in err


def _npz_with_member_header(path, key, shape):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(key + ".npy", header.getvalue())  # the header alone: no data behind it
    return str(path)


def test_npz_member_declaring_terabytes_is_refused(tmp_path, capsys):
    path = _npz_with_member_header(tmp_path / "bomb.npz", "train_text", (2**40,))
    assert "train_text declares 1099511627776 float32 (4.4 TB)" in error_of(capsys, ["convert", path, "o.h5"], 3)
    # A header that promises more data than the member holds: a data error too, not numpy's ValueError.
    path = _npz_with_member_header(tmp_path / "short.npz", "train_text", (4, 2))
    assert "train_text is not a readable .npy array" in error_of(capsys, ["convert", path, "o.h5"], 3)


def test_the_budget_is_half_the_available_memory(tmp_path, monkeypatch):
    available = budget.available_memory()
    assert available is None or available > 0
    assert budget.memory_limit() == (budget.DEFAULT_LIMIT if available is None else available // 2)
    monkeypatch.setattr(budget, "memory_limit", lambda: 500)  # a file just over what may be allocated
    path = small_h5(tmp_path / "x.h5")
    with pytest.raises(DataError, match=r"declares .* more than loading may allocate \(.* left of 500 B"):
        hdf5.load(path)


def test_pickled_arrays_sharing_one_buffer_are_refused(tmp_path):
    data = bytes(400_000)  # memoized once, the buffer of every array: 100 x 400 KB from a 400 KB file
    arrays = [_Call(np._core.numeric._frombuffer, data, np.dtype("f4"), (100_000,), "C") for _ in range(100)]
    path = tmp_path / "shared.pkl"
    path.write_bytes(pickle.dumps({"train": {"text": arrays}, "valid": {}, "test": {}}, protocol=4))
    assert os.path.getsize(path) < 500_000
    with pytest.raises(pickle.UnpicklingError, match="its arrays hold more than the pickle's"):
        pickles.load(str(path))


# Item 10: labels that do not fit the task's metrics

def _utterance_npz(path, labels, rng=None):
    """Utterance-level features ([N, D], read as T = 1) with the given labels per split."""
    rng = rng or np.random.default_rng(0)
    arrays = {}
    for split, label in labels.items():
        n = len(label)
        arrays.update({f"{split}_text": rng.standard_normal((n, 6)), f"{split}_audio": rng.standard_normal((n, 3)),
                       f"{split}_visual": rng.standard_normal((n, 2)), f"{split}_label": label})
    np.savez(path, **arrays)
    return str(path)


def _binary(n, rng):
    return rng.integers(0, 2, n).astype(np.float32)


def test_binary_labels_for_regression_are_refused_with_the_fix(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = {s: _binary(n, rng) for s, n in (("train", 16), ("dev", 6), ("test", 6))}
    err = error_of(capsys, ["train", "--data", _utterance_npz(tmp_path / "b.npz", labels), *TRAIN], 3)
    assert "every regression label is 0 or 1" in err and "CMU-MOSI's [-3, 3] scale" in err
    assert "one-hot labels [N, 2]" in err and "-1/+1" in err
    # Either fix trains: one-hot labels are a 2-class multi-label task, -1/+1 a regression.
    one_hot = {s: np.eye(2, dtype=np.float32)[v.astype(int)] for s, v in labels.items()}
    assert cli(["train", "--data", _utterance_npz(tmp_path / "h.npz", one_hot), *TRAIN, "--out", "h"]) == 0
    assert '"mean_f1"' in capsys.readouterr().out
    signed = {s: 2 * v - 1 for s, v in labels.items()}
    assert cli(["train", "--data", _utterance_npz(tmp_path / "s.npz", signed), *TRAIN, "--out", "s"]) == 0
    assert '"acc2"' in capsys.readouterr().out


def test_constant_labels_warn_what_is_undefined(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = {"train": rng.uniform(-3, 3, 16), "dev": rng.uniform(-3, 3, 6), "test": np.full(6, 1.5)}
    assert cli(["train", "--data", _utterance_npz(tmp_path / "c.npz", labels), *TRAIN]) == 0
    err = capsys.readouterr().err
    assert "mibcore: warning: " in err and "test/label has fewer than 2 distinct non-zero values: its Corr is NaN" in err
    labels["train"] = labels["train"] * 10  # outside MOSI's scale
    assert cli(["train", "--data", _utterance_npz(tmp_path / "w.npz", labels), *TRAIN, "--out", "w"]) == 0
    assert "outside CMU-MOSI's [-3, 3]: Acc-7 and Acc-5 clip" in capsys.readouterr().err


MOSI_BCLSTM = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "mosi-utterance-bclstm")


def _csv(name):
    with open(os.path.join(MOSI_BCLSTM, name), newline="") as f:
        return np.array([[float(v) for v in row] for row in csv.reader(f)])


def _mosi_bclstm_splits():
    """CMU-MOSI's bc-LSTM utterance features and binary labels where present (never in the
    project), else generated arrays of the same layout: the test asserts either way."""
    if not os.path.isdir(MOSI_BCLSTM):
        rng = np.random.default_rng(0)
        return {s: {"text": rng.standard_normal((n, 100)), "audio": rng.standard_normal((n, 73)),
                    "visual": rng.random((n, 100)), "label": _binary(n, rng)} for s, n in (("train", 40), ("test", 20))}
    splits = {}
    for split in ("train", "test"):
        text, audio, video = _csv(f"text_{split}.csv"), _csv(f"audio_{split}0.csv"), _csv(f"video_{split}0.csv")
        splits[split] = {"text": text[:, 1:], "audio": audio[:, :-1], "visual": video[:, :-1], "label": audio[:, -1]}
    return splits


def test_mosi_binary_utterance_labels_are_refused(tmp_path, capsys):
    splits = _mosi_bclstm_splits()
    half = len(splits["test"]["label"]) // 2
    splits["dev"] = {k: v[:half] for k, v in splits["test"].items()}  # (the release has no dev split)
    flat = {f"{s}_{k}": v for s, part in splits.items() for k, v in part.items()}
    np.savez(tmp_path / "mosi.npz", **flat)
    assert set(np.unique(flat["train_label"])) == {0.0, 1.0}
    err = error_of(capsys, ["train", "--data", str(tmp_path / "mosi.npz"), *TRAIN], 3)
    assert "every regression label is 0 or 1" in err and "one-hot labels [N, 2]" in err


# Item 11: pickles of protocols 0-2 written by Python 3

@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_old_protocol_pickles_load(tmp_path, protocol):
    raw = pickle.loads(open(mmsa(tmp_path / "ref.pkl"), "rb").read())
    raw["train"]["empty"] = np.zeros((0, 3), np.float32)  # b'' is pickled as bytes()
    raw["train"]["bytes"] = bytes(range(256))  # _codecs.encode with every latin-1 code point
    path = tmp_path / f"p{protocol}.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=protocol))
    loaded = pickles.restricted_load(str(path))
    assert loaded["train"]["bytes"] == bytes(range(256)) and loaded["train"]["empty"].shape == (0, 3)
    for split in ("train", "valid", "test"):
        for key in ("text", "audio", "vision", "regression_labels"):
            assert np.array_equal(loaded[split][key], raw[split][key]) and loaded[split][key].dtype == raw[split][key].dtype
    del raw["train"]["empty"], raw["train"]["bytes"]
    path.write_bytes(pickle.dumps(raw, protocol=protocol))
    np.testing.assert_array_equal(load_dataset(str(path))["dev"]["visual"], raw["valid"]["vision"].astype(np.float32))


@pytest.mark.parametrize("call, names", [
    (_Call(__import__("codecs").encode, "abc", "rot13"), "refused to unpickle _codecs.encode with arguments of types (str, str)"),
    (_Call(__import__("codecs").encode, b"abc", "hex"), "only encode(str, 'latin1') is admitted"),
    (_Call(np._core.multiarray._reconstruct, np.ndarray, (2**40,), b"b"), "only the empty ndarray numpy pickles"),
])
def test_guarded_globals_refuse_other_arguments(tmp_path, call, names):
    path = tmp_path / "g.pkl"
    path.write_bytes(pickle.dumps({"train": call}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=re.escape(names)):
        pickles.restricted_load(str(path))
