"""Users' own features: a .npz of per-split arrays (numpy.savez), read without unpickling.

Keys, for each split S of train, dev, test:
  S_text, S_audio, S_visual   [N, T, D] sequence features, or [N, D] utterance-level (read as T = 1);
                              T and D may differ between modalities
  S_label                     [N] regression labels, or [N, C] multi-label emotion labels (0/1)
  S_id                        optional: N ids (strings or numbers; default "S-0", "S-1", ...)
"""
import zipfile

import numpy as np

from mibcore.data.dataset import MODALITY_KEYS, SPLITS
from mibcore.errors import DataError

REQUIRED = (*MODALITY_KEYS, "label")
KEYS = tuple(f"{split}_{key}" for split in SPLITS for key in (*REQUIRED, "id"))


def load(path):
    """The dataset in the .npz at path; DataError naming the file and the key at fault."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: a single .npy array, not a .npz archive of {', '.join(KEYS[:5])}, ...")
        with archive:  # (arrays are read on access)
            arrays = {key: _array(archive, key, path) for key in archive.files}
    except (OSError, EOFError, zipfile.BadZipFile) as e:  # (a truncated archive)
        raise DataError(f"{path}: cannot read the .npz ({type(e).__name__}: {e})") from e
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        # numpy's "pickled data" error: neither a zip nor a .npy (an allowed pickle would be unpickled)
        raise DataError(f"{path}: not a .npz archive (write one with numpy.savez)") from e
    unknown = sorted(set(arrays) - set(KEYS))
    if unknown:
        raise DataError(f"{path}: unknown keys {unknown}; expected {{train,dev,test}}_{{text,audio,visual,label,id}}")
    return {split: _split(arrays, split, path) for split in SPLITS}


def _array(archive, key, path):
    try:
        return archive[key]
    except ValueError as e:  # an object array: reading it would unpickle
        raise DataError(f"{path}: {key} is an object array, which is not read (it would be unpickled); "
                        "store numbers, or strings for ids") from e


def _split(arrays, split, path):
    missing = [f"{split}_{key}" for key in REQUIRED if f"{split}_{key}" not in arrays]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)} (has {sorted(arrays)})")
    label = arrays[f"{split}_label"]
    if label.ndim not in (1, 2) or not np.issubdtype(label.dtype, np.number):
        raise DataError(f"{path}: {split}_label must be numbers [N] or [N, C], got {label.dtype} {label.shape}")
    n = label.shape[0]
    out = {"label": label.astype(np.float32)}
    for key in MODALITY_KEYS:
        name, arr = f"{split}_{key}", arrays[f"{split}_{key}"]
        if not np.issubdtype(arr.dtype, np.number):
            raise DataError(f"{path}: {name} must hold numbers, got {arr.dtype}")
        if arr.ndim not in (2, 3) or arr.shape[0] != n:
            raise DataError(f"{path}: {name} must be [N, T, D] or [N, D] with N = {n} ({split}_label), got {arr.shape}")
        out[key] = (arr[:, None, :] if arr.ndim == 2 else arr).astype(np.float32)
    ids = arrays.get(f"{split}_id")
    if ids is None:
        out["id"] = [f"{split}-{i}" for i in range(n)]
    elif ids.shape != (n,):
        raise DataError(f"{path}: {split}_id must hold N = {n} ids ({split}_label), got shape {ids.shape}")
    else:
        out["id"] = [str(i) for i in ids.tolist()]
    return out
