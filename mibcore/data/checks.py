"""The one validation of a dataset, whatever loaded it (check_dataset), and the label contract.

Label contract (the task is told by the labels' shape):
  regression   [N] or [N, 1] real numbers (read as [N]); L1 loss, MOSI's metrics on [-3, 3]
  multi-label  [N, C], C >= 2, values in [0, 1] (0/1, or probabilities); BCE, per-class metrics
Features are [N, T, D] real numbers with T, D >= 1 (bool, int or float; complex numbers are
refused, never cast); D, and C, are the same in every split (T may differ).
Modalities: every key of a split but label, id and text_ids; at least two, the same in every split,
ordered by modality_order (the paper's text, audio, visual first).
"""
import numpy as np

from mibcore._checks import RESERVED_MODALITY_NAMES
from mibcore.errors import DataError

SPLITS = ("train", "dev", "test")
MODALITY_KEYS = ("text", "audio", "visual")  # the paper's modalities (its file formats hold these)


def modality_order(names):
    """Modality names in the order models take them: the paper's text, audio, visual first (so a
    paper triple builds the paper's model), then the others alphabetically (so that a file's key
    order does not change the model)."""
    names = set(names)
    return [m for m in MODALITY_KEYS if m in names] + sorted(names - set(MODALITY_KEYS))


def modalities_of(part):
    """The modalities of a split (or samples) dict: its keys but label, id, text_ids, in modality_order."""
    return modality_order(k for k in part if k not in RESERVED_MODALITY_NAMES)
LABEL_CONTRACT = "[N] or [N, 1] (regression) or [N, C] with C >= 2 and values in [0, 1] (multi-label)"


def _slash_name(split, key):
    return f"{split}/{key}"


def check_dataset(data, source="dataset", key_name=None):
    """Validates the in-memory layout (see mibcore.data) before any training: every split
    present and non-empty; features and labels real numbers of the shapes above, matching N,
    finite; the same widths in every split. `key_name(split, key)` names a key as the file does
    (default: split/key).
    Returns a new dict (arrays not copied) with [N, 1] labels read as [N]; raises DataError."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a dict of splits, got {type(data).__name__}")
    key_name = key_name or _slash_name
    out = dict(data)
    for split in SPLITS:
        if split not in data:
            raise DataError(f"{source}: missing split {split!r} (has {sorted(map(str, data))})")
        out[split] = _check_split(data[split], split, source, lambda key, s=split: key_name(s, key))
    modalities = modalities_of(out["train"])
    for split in SPLITS[1:]:
        if modalities_of(out[split]) != modalities:
            raise DataError(f"{source}: split {split!r} has the modalities {modalities_of(out[split])} but train "
                            f"has {modalities}: every split must have the same")
    for key in (*modalities, "label"):
        widths = {split: out[split][key].shape[2 if key != "label" else 1:] for split in SPLITS}
        for split in SPLITS[1:]:
            if widths[split] != widths["train"]:
                what = "features per step" if key != "label" else "label columns"
                raise DataError(
                    f"{source}: {key_name(split, key)} has {_width(widths[split])} {what} but "
                    f"{key_name('train', key)} has {_width(widths['train'])}: every split must have the same")
    return out


def check_samples(part, source="samples", key_name=None):
    """Validates one group of samples to predict (not a dataset: no splits), as check_dataset
    validates a split, but with the label optional: features [N, T, D] real and finite, N ids,
    labels (when there) of the label contract. `key_name(key)` names a key as the file does
    (default: the key). Returns a new dict (label [N, 1] read as [N]); raises DataError."""
    return _check_split(part, None, source, key_name or (lambda key: key), labeled=False)


def _width(shape):
    return shape[0] if shape else "no (regression: [N])"


def _check_split(part, split, source, name, labeled=True):
    """One split (`labeled`: the label is required), or with split=None one group of samples
    whose label is optional (check_samples)."""
    if not isinstance(part, dict) or (labeled and "label" not in part):
        raise DataError(f"{source}: split {split!r} must be a dict with a 'label' array")
    modalities = modalities_of(part) if isinstance(part, dict) else []
    if len(modalities) < 2:
        where = f"split {split!r}" if split else "the samples"
        raise DataError(f"{source}: {where} must hold the features of at least 2 modalities (keys other than "
                        f"{', '.join(RESERVED_MODALITY_NAMES)}), got {modalities}")
    label = None
    if "label" in part:
        label = _real_array(part["label"], source, name("label"))
        if label.ndim == 2 and label.shape[1] == 1:
            label = label[:, 0]  # [N, 1]: regression
        if not (label.ndim == 1 or (label.ndim == 2 and label.shape[1] >= 2)):
            raise DataError(f"{source}: {name('label')} must be {LABEL_CONTRACT}, got shape {label.shape}")
        n = label.shape[0]
    else:  # (unlabeled samples: N is the first modality's)
        first = _real_array(part.get(modalities[0]), source, name(modalities[0]))
        if first.ndim != 3:
            raise DataError(f"{source}: {name(modalities[0])} must be an array [N, T, D], got {first.shape}")
        n = first.shape[0]
    if n == 0:
        raise DataError(f"{source}: split {split!r} is empty" if split else f"{source}: holds no samples")
    for key in modalities:
        arr = _real_array(part.get(key), source, name(key))
        if arr.ndim != 3 or arr.shape[0] != n:
            raise DataError(f"{source}: {name(key)} must be an array [N={n}, T, D], got {arr.shape}")
        if 0 in arr.shape[1:]:
            raise DataError(f"{source}: {name(key)} must have T >= 1 steps and D >= 1 features, got {arr.shape}")
    ids = part.get("id", [])
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__") or len(ids) != n:
        raise DataError(f"{source}: {name('id')} must hold {n} ids")
    if "text_ids" in part:
        ids = part["text_ids"]
        if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iu" or ids.ndim != 2 or ids.shape[0] != n:
            raise DataError(f"{source}: {name('text_ids')} must be integer token ids [N={n}, L], "
                            f"got {getattr(ids, 'dtype', type(ids).__name__)} {getattr(ids, 'shape', '')}")
    for key in (*modalities, *(("label",) if label is not None else ())):
        arr = label if key == "label" else part[key]
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise DataError(f"{source}: {name(key)} holds NaN or Inf ({bad} values)")
    if label is None:
        return dict(part)
    if label.ndim == 2 and (label.min() < 0 or label.max() > 1):
        raise DataError(
            f"{source}: {name('label')} is [N, C] = {list(label.shape)}: multi-label targets (BCE), which must lie "
            f"in [0, 1], got values in [{label.min():g}, {label.max():g}]; regression labels are [N] or [N, 1]")
    return {**part, "label": label}


def _real_array(arr, source, name):
    """`arr` as the array it must be: real numbers (bool, int, float)."""
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{source}: {name} must be a numpy array, got {type(arr).__name__}")
    kind = arr.dtype.kind
    if kind == "c":
        raise DataError(f"{source}: {name} holds complex numbers ({arr.dtype}), which are not cast: "
                        "store real features (e.g. the magnitude, or real and imaginary parts as features)")
    if kind not in "biuf":
        what = {"O": "Python objects or ragged arrays", "S": "byte strings", "U": "strings"}.get(kind, "no numbers")
        raise DataError(f"{source}: {name} must hold real numbers, got dtype {arr.dtype} ({what})")
    return arr
