"""Users' own features: a .npz of per-split arrays (numpy.savez), read without unpickling.

Keys, for each split S of train, dev, test:
  S_text, S_audio, S_visual   [N, T, D] sequence features, or [N, D] utterance-level (read as T = 1);
                              T and D may differ between modalities
  S_label                     [N] or [N, 1] regression labels, or [N, C] multi-label labels in [0, 1]
                              (the contract of mibcore.data.checks)
  S_id                        optional: N ids (strings or numbers; default "S-0", "S-1", ...)

Samples to predict (`mibcore predict`; load_samples): one group, keys without a split prefix:
  text, audio, visual         as above
  label                       optional (as above)
  id                          optional: N ids (default "0", "1", ...)
"""
import zipfile

import numpy as np

from mibcore.data.budget import Budget
from mibcore.data.checks import MODALITY_KEYS, SPLITS
from mibcore.errors import DataError

REQUIRED = (*MODALITY_KEYS, "label")
KEYS = tuple(f"{split}_{key}" for split in SPLITS for key in (*REQUIRED, "id"))
SAMPLE_KEYS = (*REQUIRED, "id")


def key_name(split, key):
    """How this format names a key (for mibcore.data.checks' messages)."""
    return f"{split}_{key}"


def load(path):
    """The dataset in the .npz at path; DataError naming the file and the key at fault. Each
    member's header is read, and its size charged to a Budget, before its data."""
    arrays = _read(path, KEYS, "{train,dev,test}_{text,audio,visual,label,id}")
    return {split: _split(arrays, split, path) for split in SPLITS}


def holds_samples(path):
    """Whether the .npz at path has the samples layout (a key without a split prefix: text,
    audio, visual); False for anything else (load then names what is wrong)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = {name.removesuffix(".npy") for name in archive.namelist()}
    except (OSError, zipfile.BadZipFile):
        return False
    return bool(names & set(MODALITY_KEYS))


def load_samples(path):
    """The samples (one split's dict, label optional) in a .npz of the samples layout, with the
    same reading guards as load; validate them with mibcore.data.checks.check_samples."""
    return _split(_read(path, SAMPLE_KEYS, "text, audio, visual, and optionally label, id"), None, path)


def _read(path, allowed, expected):
    """{key: array} of the .npz at path, whose keys must be in `allowed` (DataError otherwise)."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: a single .npy array, not a .npz archive of {', '.join(KEYS[:5])}, ...")
    except (OSError, EOFError, zipfile.BadZipFile) as e:  # (a truncated archive)
        raise DataError(f"{path}: cannot read the .npz ({type(e).__name__}: {e})") from e
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        # numpy's "pickled data" error: neither a zip nor a .npy (an allowed pickle would be unpickled)
        raise DataError(f"{path}: not a .npz archive (write one with numpy.savez)") from e
    budget = Budget(path)
    with archive:  # (arrays are read on access)
        unknown = sorted(set(archive.files) - set(allowed))
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


def _split(arrays, split, path):
    """One split (split=None: the samples layout, label optional), with [N, D] features read
    as [N, 1, D]; dtypes and values are left to mibcore.data.checks (named as this format names
    them: key_name)."""
    name = (lambda key: f"{split}_{key}") if split else (lambda key: key)  # noqa: E731
    required = REQUIRED if split else MODALITY_KEYS
    missing = [name(key) for key in required if name(key) not in arrays]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)} (has {sorted(arrays)})")
    out = {}
    counter = name("label") if name("label") in arrays else name(MODALITY_KEYS[0])  # (what N is read from)
    if name("label") in arrays:
        out["label"] = arrays[name("label")]
        if out["label"].ndim not in (1, 2):
            raise DataError(f"{path}: {name('label')} must be [N] or [N, C], got shape {out['label'].shape}")
    n = arrays[counter].shape[0] if arrays[counter].ndim else 0
    for key in MODALITY_KEYS:
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
