"""Data: the synthetic generator, the restricted unpickler, and format round trips."""
import os
import pickle
import time

import numpy as np
import pytest

from mibcore.data import check_dataset, hdf5, load_dataset, make_synthetic, pickles
from mibcore.__main__ import main as cli
from mibcore.errors import DataError


def test_synthetic_is_deterministic_and_well_formed():
    a = make_synthetic(n_train=20, n_dev=5, n_test=5, seq_len=4, seed=3)
    b = make_synthetic(n_train=20, n_dev=5, n_test=5, seq_len=4, seed=3)
    check_dataset(a)
    assert np.array_equal(a["train"]["text"], b["train"]["text"])
    assert a["train"]["text"].shape == (20, 4, 768) and a["train"]["label"].shape == (20,)
    assert np.abs(a["train"]["label"]).max() <= 3
    emotion = make_synthetic(n_train=8, n_dev=2, n_test=2, seq_len=3, task="emotion")
    assert emotion["train"]["label"].shape == (8, 6)
    with pytest.raises(ValueError, match="n_train must be a positive int"):
        make_synthetic(n_train=0)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/mibcore-pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"train": [Evil()], "dev": [], "test": []}, f)
    with pytest.raises(pickle.UnpicklingError, match="refused to unpickle global posix.system|refused to unpickle global os.system"):
        pickles.load(str(path))
    assert not os.path.exists("/tmp/mibcore-pwned")


def write_mmsa(path, n=6, t=5):
    rng = np.random.default_rng(0)
    raw = {}
    for split in ("train", "valid", "test"):
        raw[split] = {
            "text": rng.standard_normal((n, t, 768)).astype(np.float32),
            "audio": rng.standard_normal((n, t, 5)).astype(np.float32),
            "vision": rng.standard_normal((n, t, 20)).astype(np.float32),
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
            "id": [f"{split}_{i}" for i in range(n)],
        }
    with open(path, "wb") as f:
        pickle.dump(raw, f)
    return raw


def test_mmsa_pickle_to_hdf5_round_trip(tmp_path):
    raw = write_mmsa(tmp_path / "mosi.pkl")
    out = tmp_path / "mosi.h5"
    assert cli(["convert", str(tmp_path / "mosi.pkl"), str(out)]) == 0
    data = load_dataset(str(out))
    assert np.array_equal(data["dev"]["visual"], raw["valid"]["vision"])
    assert np.array_equal(data["test"]["label"], raw["test"]["regression_labels"])
    assert data["train"]["id"] == raw["train"]["id"]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


def test_mag_bert_pickle_is_word_aligned_and_left_padded(tmp_path):
    rng = np.random.default_rng(1)
    raw = {}
    for split in ("train", "dev", "test"):
        rows = []
        for k, words in enumerate((["a", "good", "movie"], ["bad"])):
            n = len(words)
            rows.append(((words, rng.standard_normal((n, 47)), rng.standard_normal((n, 74))), np.array([[k - 0.5]]),
                         f"{split}[{k}]"))
        raw[split] = rows
    path = tmp_path / "mosi_magbert.pkl"
    with open(path, "wb") as f:
        pickle.dump(raw, f)
    data = check_dataset(pickles.load(str(path), text_dim=8))
    assert data["train"]["text"].shape == (2, 3, 8)
    assert data["train"]["audio"].shape == (2, 3, 74)
    # The one-word sample is left-padded: its word sits at the last step, zeros before it.
    assert np.all(data["train"]["audio"][1, :2] == 0) and np.any(data["train"]["audio"][1, 2] != 0)
    np.testing.assert_array_equal(data["train"]["text"][1, 2], pickles.HashingEmbedding(8)("bad"))
    assert data["dev"]["label"].tolist() == [-0.5, 0.5]


def test_bad_layouts_are_clear_errors(tmp_path):
    path = tmp_path / "odd.pkl"
    with open(path, "wb") as f:
        pickle.dump({"foo": 1}, f)
    with pytest.raises(ValueError, match="unknown pickle layout"):
        pickles.load(str(path))
    with pytest.raises(DataError, match="neither 'synthetic' nor an existing file"):
        load_dataset("nope.h5")
    data = make_synthetic(n_train=4, n_dev=2, n_test=2, seq_len=3)
    data["dev"]["label"][0] = np.nan
    with pytest.raises(ValueError, match="dev/label holds NaN"):
        check_dataset(data)
    h5 = tmp_path / "x.h5"
    hdf5.save(make_synthetic(n_train=4, n_dev=2, n_test=2, seq_len=3), str(h5))
    import h5py

    with h5py.File(h5, "a") as f:
        f.attrs["mibcore_format"] = 99
    with pytest.raises(ValueError, match="not a mibcore HDF5 file"):
        hdf5.load(str(h5))


def _write(path, obj=None, raw=None):
    with open(path, "wb") as f:
        f.write(raw if raw is not None else pickle.dumps(obj, protocol=4))
    return str(path)


class _Allocation:
    def __reduce__(self):
        return (bytes, (3_000_000_000,))


def _shared_lists_bomb(path, levels=40):
    layer = [0.0]
    for _ in range(levels):
        layer = [layer, layer]  # 2^levels leaves from a few hundred bytes
    return _write(path, {"train": {"text": layer, "audio": layer, "vision": layer, "regression_labels": layer,
                                   "id": layer},
                         "valid": {}, "test": {}})


def test_pickle_bombs_are_refused_quickly(tmp_path):
    shared = _shared_lists_bomb(tmp_path / "shared.pkl")
    assert os.path.getsize(shared) < 2000
    deep = [[]]
    for _ in range(200):
        deep = [deep]
    nested = _write(tmp_path / "deep.pkl", {"train": deep, "dev": [], "test": []})
    # bytes(3_000_000_000) as a tiny pickle: GLOBAL builtins.bytes, an int, REDUCE.
    alloc = _write(tmp_path / "alloc.pkl", raw=pickle.dumps(_Allocation(), protocol=2))
    assert os.path.getsize(alloc) < 40
    for path, match in ((shared, "referenced more than once"), (nested, "nested deeper than"),
                        (alloc, "refused to unpickle global builtins.bytes")):
        start = time.time()
        with pytest.raises(pickle.UnpicklingError, match=match):
            pickles.load(path)
        assert time.time() - start < 1.0


def test_plain_shared_scalars_and_empty_tuples_still_load(tmp_path):
    word = "same-word"
    raw = {"train": {"ids": [word, word, word], "shapes": [(), (), ()]}, "dev": [], "test": []}
    assert pickles.restricted_load(_write(tmp_path / "ok.pkl", raw)) == raw


def npz_arrays(n=(4, 2, 2)):
    """Per-split arrays as users' extractors give them: sequence text, utterance-level audio/visual."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, size in zip(("train", "dev", "test"), n):
        arrays.update({f"{split}_text": rng.standard_normal((size, 3, 5)),
                       f"{split}_audio": rng.standard_normal((size, 4)),
                       f"{split}_visual": rng.standard_normal((size, 2)).astype(np.float32),
                       f"{split}_label": rng.uniform(-3, 3, size)})
    arrays["train_id"] = np.array([f"clip{i}" for i in range(n[0])])
    return arrays


def test_npz_of_users_features_converts_and_trains(tmp_path, capsys):
    arrays = npz_arrays()
    np.savez(tmp_path / "feats.npz", **arrays)
    assert cli(["convert", str(tmp_path / "feats.npz"), str(tmp_path / "feats.h5")]) == 0
    data = hdf5.load(str(tmp_path / "feats.h5"))
    assert data["train"]["text"].shape == (4, 3, 5) and data["train"]["audio"].shape == (4, 1, 4)  # [N, D]: T = 1
    np.testing.assert_allclose(data["dev"]["audio"][:, 0], arrays["dev_audio"], rtol=1e-6)
    assert data["train"]["id"] == ["clip0", "clip1", "clip2", "clip3"] and data["test"]["id"] == ["test-0", "test-1"]
    assert cli(["train", "--data", str(tmp_path / "feats.npz"), "--d", "10", "--hidden", "16", "--epochs", "1",
                "--quiet", "--out", str(tmp_path / "run")]) == 0


@pytest.mark.parametrize("change, names", [
    ({"dev_audio": None}, "missing dev_audio"),
    ({"valid_text": np.zeros((2, 5))}, "unknown keys ['valid_text']"),
    ({"test_visual": np.zeros((3, 2))}, "test_visual must be [N, T, D] or [N, D] with N = 2 (test_label), got (3, 2)"),
    ({"train_text": np.zeros(4)}, "train_text must be [N, T, D] or [N, D]"),
    ({"dev_label": np.array(["a", "b"])}, "dev_label must hold real numbers, got dtype <U1"),
    ({"train_id": np.array(["a"])}, "train_id must hold N = 4 ids"),
    ({"train_id": np.array([{}, {}, {}, {}], dtype=object)}, "train_id is an object array, which is not read"),
])
def test_bad_npz_files_name_the_key(tmp_path, change, names):
    arrays = {k: v for k, v in {**npz_arrays(), **change}.items() if v is not None}
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match="bad.npz: ") as e:
        load_dataset(str(tmp_path / "bad.npz"))
    assert names in str(e.value)


def test_files_that_are_no_npz_are_refused_without_unpickling(tmp_path):
    (tmp_path / "evil.npz").write_bytes(pickle.dumps(Evil()))
    np.save(tmp_path / "one.npy", np.zeros(3))
    os.rename(tmp_path / "one.npy", tmp_path / "one.npz")
    for name, names in (("evil.npz", "not a .npz archive"), ("one.npz", "a single .npy array")):
        with pytest.raises(DataError, match=names):
            load_dataset(str(tmp_path / name))
    assert not os.path.exists("/tmp/mibcore-pwned")


def test_a_large_array_referenced_by_every_row_is_refused(tmp_path):
    # Rows are distinct tuples, but each points at one 1 MB array: stacking them would build rows x 1 MB.
    big = np.zeros(1 << 18, dtype=np.float32)
    rows = [((["w"], big, big), 0.0, f"s{i}") for i in range(1000)]
    path = _write(tmp_path / "shared-array.pkl", {"train": rows, "dev": [], "test": []})
    assert os.path.getsize(path) < 2 << 20
    with pytest.raises(pickle.UnpicklingError, match="large array or string is referenced more than once"):
        pickles.load(path)
