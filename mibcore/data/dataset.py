"""Loading a dataset by path or name (validated by mibcore.data.checks), and the torch Dataset over a split."""
import os
import pickle

import numpy as np
import torch

from mibcore.data.checks import MODALITY_KEYS, SPLITS, check_dataset, modalities_of  # noqa: F401 (re-exported)
from mibcore.errors import DataError


def load_dataset(spec, text_backbone=None, max_text_length=50, glove=None, **synthetic_options):
    """`spec`: 'synthetic' (optionally 'synthetic-emotion'), or a path to a .h5, a .npz of arrays
    (mibcore.data.npz), an MMSA pickle or a MAG-BERT pickle (detected by content). `text_backbone`
    (pickles): also tokenize text; `glove` (MAG-BERT pickles): the word embedding file. Raises
    DataError naming the file."""
    from mibcore.data import hdf5, npz, pickles, synthetic

    if spec in ("synthetic", "synthetic-regression"):
        return check_dataset(synthetic.make_synthetic(**synthetic_options), spec)
    if spec == "synthetic-emotion":
        return check_dataset(synthetic.make_synthetic(task="emotion", **synthetic_options), spec)
    if not os.path.isfile(spec):
        what = "a directory" if os.path.isdir(spec) else "neither 'synthetic' nor an existing file"
        raise DataError(f"data: {spec!r} is {what}")
    key_name = None  # (split/key)
    try:
        if spec.endswith((".h5", ".hdf5")):
            data = hdf5.load(spec)
        elif spec.endswith(".npz"):
            data, key_name = npz.load(spec), npz.key_name
        else:
            data = pickles.load(spec, glove=glove, text_backbone=text_backbone, max_length=max_text_length)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, IndexError, TypeError) as e:
        # Unreadable or truncated files (h5py reports them as OSError) and layouts without a key
        # the loaders expect: name the file, not only the internal exception.
        reason = "the file is empty or truncated" if isinstance(e, EOFError) else f"{type(e).__name__}: {e}"
        raise DataError(f"{spec}: cannot read the data ({reason})") from e
    return check_dataset(data, spec, key_name)


class MultimodalDataset(torch.utils.data.Dataset):
    """One split as tensors: item i -> (one input per modality, in the order of `modalities`
    (default: the split's, modalities_of), then the label); text is the token ids ("text_ids",
    int64) when `token_ids` is set, else the text features. Unlabeled samples (mibcore predict)
    give label None. For the paper's data: (text, audio, visual, label)."""

    def __init__(self, split, token_ids=False, modalities=None):
        self.modalities = tuple(modalities or modalities_of(split))
        if token_ids and "text_ids" not in split:
            raise DataError("a text backbone needs token ids: load the data with text_backbone=PATH")
        self.inputs = [self._tensor(split, m, token_ids) for m in self.modalities]
        self.label = None if "label" not in split else torch.from_numpy(
            np.ascontiguousarray(split["label"], dtype=np.float32))

    @staticmethod
    def _tensor(split, m, token_ids):
        if m == "text" and token_ids:
            return torch.from_numpy(np.ascontiguousarray(split["text_ids"], dtype=np.int64))
        return torch.from_numpy(np.ascontiguousarray(split[m], dtype=np.float32))

    def __len__(self):
        return self.inputs[0].shape[0]

    def __getitem__(self, i):
        return (*(x[i] for x in self.inputs), None if self.label is None else self.label[i])
