"""mibcore's own HDF5 layout: /{train,dev,test}/{text,audio,visual,label,id}, attribute
`mibcore_format` = 1. Written to a temporary file and renamed, so it is never half-written."""
import numpy as np

from mibcore._io import atomic_write
from mibcore._optional import require
from mibcore.data.budget import Budget
from mibcore.data.checks import MODALITY_KEYS, modalities_of
from mibcore.errors import DataError

FORMAT_VERSION = 1


def save(data, path):
    h5py = require("h5py", "reading or writing .h5 data")
    for split, part in data.items():  # (the layout is the paper's three modalities)
        if modalities_of(part) != list(MODALITY_KEYS):
            raise DataError(f"{path}: mibcore's HDF5 layout holds the modalities {', '.join(MODALITY_KEYS)}; "
                            f"the {split} split has {modalities_of(part)}: keep such data as a .npz")

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            f.attrs["mibcore_format"] = FORMAT_VERSION
            for split, part in data.items():
                g = f.create_group(split)
                for key in ("text", "audio", "visual", "label"):
                    g.create_dataset(key, data=np.asarray(part[key], dtype=np.float32), compression="gzip")
                g.create_dataset("id", data=np.asarray(part["id"], dtype=object), dtype=h5py.string_dtype())
                if "text_ids" in part:
                    g.create_dataset("text_ids", data=np.asarray(part["text_ids"], dtype=np.int64), compression="gzip")

    atomic_write(path, write)


def load(path):
    """The splits in a mibcore HDF5 file, as stored (mibcore.data.checks validates them). Each
    dataset's declared size is charged to a Budget before it is read."""
    h5py = require("h5py", "reading or writing .h5 data")

    budget = Budget(path)
    with h5py.File(path, "r") as f:
        version = f.attrs.get("mibcore_format")
        if np.ndim(version) != 0 or not isinstance(version, (int, np.integer)) or version != FORMAT_VERSION:
            shown = f"an array of shape {np.shape(version)}" if np.ndim(version) else repr(version)
            raise DataError(f"{path}: not a mibcore HDF5 file (mibcore_format={shown}, expected {FORMAT_VERSION})")
        out = {}
        for split in f:
            g = f[split]
            if not isinstance(g, h5py.Group):
                raise DataError(f"{path}: /{split} must be a group of datasets, got {type(g).__name__}")
            missing = [key for key in ("text", "audio", "visual", "label", "id") if key not in g]
            if missing:
                raise DataError(f"{path}: /{split} has no {', '.join(missing)} (has {sorted(g)})")
            keys = ("text", "audio", "visual", "label", "id", *(("text_ids",) if "text_ids" in g else ()))
            out[split] = {key: _read(g[key], f"/{split}/{key}", path, budget) for key in keys}
            ids = out[split]["id"]
            out[split]["id"] = [s.decode(errors="replace") if isinstance(s, bytes) else str(s)
                                for s in (ids if np.ndim(ids) else [ids])]
    return out


def _read(item, key, path, budget):
    h5py = require("h5py", "reading or writing .h5 data")

    if not isinstance(item, h5py.Dataset):
        raise DataError(f"{path}: {key} must be a dataset, got {type(item).__name__}")
    if item.shape is None:
        raise DataError(f"{path}: {key} holds no data (an empty dataspace)")
    budget.take(key, item.shape, item.dtype)
    return item[()]
