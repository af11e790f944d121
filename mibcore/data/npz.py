"""Users' own features: a .npz of per-split arrays (numpy.savez), read without unpickling.

Keys, for each split S of train, dev, test:
  S_text, S_audio, S_visual   [N, T, D] sequence features, or [N, D] utterance-level (read as T = 1);
                              T and D may differ between modalities
  S_label                     [N] or [N, 1] regression labels, or [N, C] multi-label labels in [0, 1]
                              (the contract of mibcore.data.checks)
  S_id                        optional: N ids (strings or numbers; default "S-0", "S-1", ...)
"""
import zipfile

import numpy as np

from mibcore.data.budget import Budget
from mibcore.data.checks import MODALITY_KEYS, SPLITS
from mibcore.errors import DataError

REQUIRED = (*MODALITY_KEYS, "label")
KEYS = tuple(f"{split}_{key}" for split in SPLITS for key in (*REQUIRED, "id"))


def key_name(split, key):
    """How this format names a key (for mibcore.data.checks' messages)."""
    return f"{split}_{key}"


def load(path):
    """The dataset in the .npz at path; DataError naming the file and the key at fault. Each
    member's header is read, and its size charged to a Budget, before its data."""
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
        unknown = sorted(set(archive.files) - set(KEYS))
        if unknown:
            raise DataError(f"{path}: unknown keys {unknown}; expected {{train,dev,test}}_{{text,audio,visual,label,id}}")
        arrays = {key: _array(archive, key, path, budget) for key in archive.files}
    return {split: _split(arrays, split, path) for split in SPLITS}


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
    """One split, with [N, D] features read as [N, 1, D]; dtypes and values are left to
    mibcore.data.checks (named as this format names them: key_name)."""
    missing = [f"{split}_{key}" for key in REQUIRED if f"{split}_{key}" not in arrays]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)} (has {sorted(arrays)})")
    label = arrays[f"{split}_label"]
    if label.ndim not in (1, 2):
        raise DataError(f"{path}: {split}_label must be [N] or [N, C], got shape {label.shape}")
    n = label.shape[0]
    out = {"label": label}
    for key in MODALITY_KEYS:
        name, arr = f"{split}_{key}", arrays[f"{split}_{key}"]
        if arr.ndim not in (2, 3) or arr.shape[0] != n:
            raise DataError(f"{path}: {name} must be [N, T, D] or [N, D] with N = {n} ({split}_label), got {arr.shape}")
        out[key] = arr[:, None, :] if arr.ndim == 2 else arr
    ids = arrays.get(f"{split}_id")
    if ids is None:
        out["id"] = [f"{split}-{i}" for i in range(n)]
    elif ids.shape != (n,):
        raise DataError(f"{path}: {split}_id must hold N = {n} ids ({split}_label), got shape {ids.shape}")
    else:
        out["id"] = [str(i) for i in ids.tolist()]
    return out
