"""Dataset checks, loading by path or name, and the torch Dataset over a split."""
import os

import numpy as np
import torch

SPLITS = ("train", "dev", "test")
MODALITY_KEYS = ("text", "audio", "visual")


def check_dataset(data, source="dataset"):
    """Validates the in-memory layout (see mibcore.data); returns it."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a dict of splits, got {type(data).__name__}")
    for split in SPLITS:
        if split not in data:
            raise ValueError(f"{source}: missing split {split!r} (has {sorted(data)})")
        part = data[split]
        n = len(part["label"])
        for key in MODALITY_KEYS:
            arr = part.get(key)
            if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.shape[0] != n:
                shape = getattr(arr, "shape", None)
                raise ValueError(f"{source}: {split}/{key} must be an array [N={n}, T, D], got {shape}")
        if len(part.get("id", [])) != n:
            raise ValueError(f"{source}: {split}/id must hold {n} ids")
        if not np.isfinite(part["label"]).all():
            raise ValueError(f"{source}: {split}/label holds NaN or Inf")
    return data


def load_dataset(spec, text_backbone=None, max_text_length=50, **synthetic_options):
    """`spec`: 'synthetic' (optionally 'synthetic-emotion'), or a path to a .h5, an MMSA pickle
    or a MAG-BERT pickle (detected by content). `text_backbone` (pickles): also tokenize text."""
    from mibcore.data import hdf5, pickles, synthetic

    if spec in ("synthetic", "synthetic-regression"):
        return synthetic.make_synthetic(**synthetic_options)
    if spec == "synthetic-emotion":
        return synthetic.make_synthetic(task="emotion", **synthetic_options)
    if not os.path.exists(spec):
        raise FileNotFoundError(f"data: {spec!r} is neither 'synthetic' nor an existing file")
    if spec.endswith((".h5", ".hdf5")):
        return check_dataset(hdf5.load(spec), spec)
    return check_dataset(pickles.load(spec, text_backbone=text_backbone, max_length=max_text_length), spec)


class MultimodalDataset(torch.utils.data.Dataset):
    """One split as tensors: item i -> (text, audio, visual, label); text is the token ids
    ("text_ids", int64) when `token_ids` is set, else the text features."""

    def __init__(self, split, token_ids=False):
        if token_ids:
            if "text_ids" not in split:
                raise ValueError("a text backbone needs token ids: load the data with text_backbone=PATH")
            self.text = torch.from_numpy(np.ascontiguousarray(split["text_ids"], dtype=np.int64))
        else:
            self.text = torch.from_numpy(np.ascontiguousarray(split["text"], dtype=np.float32))
        self.audio = torch.from_numpy(np.ascontiguousarray(split["audio"], dtype=np.float32))
        self.visual = torch.from_numpy(np.ascontiguousarray(split["visual"], dtype=np.float32))
        self.label = torch.from_numpy(np.ascontiguousarray(split["label"], dtype=np.float32))

    def __len__(self):
        return self.label.shape[0]

    def __getitem__(self, i):
        return self.text[i], self.audio[i], self.visual[i], self.label[i]
