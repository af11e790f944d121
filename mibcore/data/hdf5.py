"""mibcore's own HDF5 layout: /{train,dev,test}/{text,audio,visual,label,id}, attribute
`mibcore_format` = 1. Written to a temporary file and renamed, so it is never half-written."""
import numpy as np

from mibcore._io import atomic_write
from mibcore.errors import DataError

FORMAT_VERSION = 1


def save(data, path):
    import h5py

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
    import h5py

    with h5py.File(path, "r") as f:
        version = f.attrs.get("mibcore_format")
        if version != FORMAT_VERSION:
            raise DataError(f"{path}: not a mibcore HDF5 file (mibcore_format={version!r}, expected {FORMAT_VERSION})")
        out = {}
        for split in f:
            g = f[split]
            missing = [key for key in ("text", "audio", "visual", "label", "id") if key not in g]
            if missing:
                raise DataError(f"{path}: /{split} has no {', '.join(missing)} (has {sorted(g)})")
            out[split] = {key: g[key][()] for key in ("text", "audio", "visual", "label")}
            out[split]["id"] = [s.decode() if isinstance(s, bytes) else str(s) for s in g["id"][()]]
            if "text_ids" in g:
                out[split]["text_ids"] = g["text_ids"][()]
    return out
