"""Users' own features: a .npz of per-split arrays (numpy.savez), read without unpickling.

Keys, for each split S of train, dev, test:
  S_<modality>                [N, T, D] sequence features, or [N, D] utterance-level (read as T = 1),
                              of each of 2 or more modalities, named freely (identifiers: S_text,
                              S_audio, S_visual as the paper's, or S_eeg, S_gaze, ...), the same in
                              every split; T and D may differ between modalities
  S_label                     [N] or [N, 1] regression labels, or [N, C] multi-label labels in [0, 1]
                              (the contract of mibcore.data.checks)
  S_id                        optional: N ids (strings or numbers; default "S-0", "S-1", ...)

Samples to predict (`mibcore predict`; load_samples): one group, keys without a split prefix:
  <modality>                  as above (those of the model: text, audio, visual for the paper's)
  label                       optional (as above)
  id                          optional: N ids (default "0", "1", ...)
"""
import zipfile

import numpy as np

from mibcore.data.budget import Budget
from mibcore.data.checks import SPLITS, modality_order
from mibcore.errors import DataError

NOT_FEATURES = ("label", "id")
DATASET_KEYS = "{train,dev,test}_<modality> (2 or more modalities), {train,dev,test}_label, optionally _id"


def _split_of(key):
    """(split, rest) of a dataset key such as train_audio; (None, key) without a split prefix."""
    split, _, rest = key.partition("_")
    return (split, rest) if split in SPLITS and rest else (None, key)


def key_name(split, key):
    """How this format names a key (for mibcore.data.checks' messages)."""
    return f"{split}_{key}"


def load(path):
    """The dataset in the .npz at path; DataError naming the file and the key at fault. Each
    member's header is read, and its size charged to a Budget, before its data."""
    arrays = _read(path, lambda key: _split_of(key)[0] and _split_of(key)[1] != "text_ids", DATASET_KEYS)
    modalities = _modalities({_split_of(key)[1] for key in arrays}, path)
    return {split: _split(arrays, split, path, modalities) for split in SPLITS}


def holds_samples(path):
    """Whether the .npz at path has the samples layout (keys, but none with a split prefix such
    as train_); False for anything else (load then names what is wrong)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = {name.removesuffix(".npy") for name in archive.namelist()}
    except (OSError, zipfile.BadZipFile):
        return False
    return bool(names) and not any(_split_of(name)[0] for name in names)


def load_samples(path):
    """The samples (one split's dict, label optional) in a .npz of the samples layout, with the
    same reading guards as load; validate them with mibcore.data.checks.check_samples."""
    arrays = _read(path, lambda key: key != "text_ids", "<modality> (each), and optionally label, id")
    return _split(arrays, None, path, _modalities(set(arrays), path))


def _modalities(names, path):
    """The modalities among a file's key names (without split prefixes), in modality_order."""
    names = set(names) - set(NOT_FEATURES)
    bad = sorted(m for m in names if not m.isidentifier())
    if bad:
        raise DataError(f"{path}: modality names {bad}: a modality is named by an identifier (letters, digits, _)")
    return modality_order(names)


def _read(path, allowed, expected):
    """{key: array} of the .npz at path, whose keys must be `allowed(key)` (DataError otherwise)."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: a single .npy array, not a .npz archive of {DATASET_KEYS}")
    except (OSError, EOFError, zipfile.BadZipFile) as e:  # (a truncated archive)
        raise DataError(f"{path}: cannot read the .npz ({type(e).__name__}: {e})") from e
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        # numpy's "pickled data" error: neither a zip nor a .npy (an allowed pickle would be unpickled)
        raise DataError(f"{path}: not a .npz archive (write one with numpy.savez)") from e
    budget = Budget(path)
    with archive:  # (arrays are read on access)
        unknown = sorted(key for key in archive.files if not allowed(key))
        if unknown:
            raise DataError(f"{path}: unknown keys {unknown}; expected {expected}")
        return {key: _array(archive, key, path, budget) for key in archive.files}


def _array(archive, key, path, budget):
    member = key if key in archive.zip.namelist() else key + ".npy"  # (as NpzFile looks it up)
    try:
        with archive.zip.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version not in _HEADERS:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = _HEADERS[version](f)
        if dtype.hasobject:  # reading it would unpickle
            raise DataError(f"{path}: {key} is an object array, which is not read (it would be unpickled); "
                            "store numbers, or strings for ids")
        budget.take(key, shape, dtype)
        return archive[key]
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read {key} ({type(e).__name__}: {e})") from e
    except ValueError as e:  # not a .npy member, or its data shorter than its header says
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: {key} is not a readable .npy array ({e})") from e


_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _split(arrays, split, path, modalities):
    """One split (split=None: the samples layout, label optional), with [N, D] features read
    as [N, 1, D]; dtypes and values are left to mibcore.data.checks (named as this format names
    them: key_name)."""
    name = (lambda key: f"{split}_{key}") if split else (lambda key: key)  # noqa: E731
    required = (*modalities, "label") if split else modalities
    missing = [name(key) for key in required if name(key) not in arrays]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)} (has {sorted(arrays)})")
    out = {}
    if len(modalities) < 2:  # (checks.check_dataset too, after every format's loader: here with the keys)
        raise DataError(f"{path}: features of {len(modalities)} modality {modalities}; MIB fuses 2 or more: "
                        f"{DATASET_KEYS if split else 'keys <modality>, and optionally label, id'}")
    counter = name("label") if name("label") in arrays else name(modalities[0])  # (what N is read from)
    if name("label") in arrays:
        out["label"] = arrays[name("label")]
        if out["label"].ndim not in (1, 2):
            raise DataError(f"{path}: {name('label')} must be [N] or [N, C], got shape {out['label'].shape}")
    n = arrays[counter].shape[0] if arrays[counter].ndim else 0
    for key in modalities:
        arr = arrays[name(key)]
        if arr.ndim not in (2, 3) or arr.shape[0] != n:
            raise DataError(f"{path}: {name(key)} must be [N, T, D] or [N, D] with N = {n} ({counter}), got {arr.shape}")
        out[key] = arr[:, None, :] if arr.ndim == 2 else arr
    ids = arrays.get(name("id"))
    if ids is None:
        out["id"] = [f"{split}-{i}" if split else str(i) for i in range(n)]
    elif ids.shape != (n,):
        raise DataError(f"{path}: {name('id')} must hold N = {n} ids ({counter}), got shape {ids.shape}")
    else:
        out["id"] = [str(i) for i in ids.tolist()]
    return out
