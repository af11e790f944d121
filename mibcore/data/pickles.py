"""Loaders of the public pickle formats, through a restricted unpickler.

- MMSA (thuiar/MMSA): {"train"|"valid"|"test": {"text": [N, T, 768] BERT features,
  "audio": [N, T, Da], "vision": [N, T, Dv], "regression_labels": [N], "id": [...], ...}}.
- MAG-BERT (the MIB paper's data): {"train"|"dev"|"test": [((words, visual, acoustic), label,
  segment), ...]} with word-aligned visual [T, Dv] and acoustic [T, Da] arrays. Words need a
  text embedding: a GloVe-format text file (`glove=`), else a deterministic hashing embedding
  (offline placeholder; documented as such, never a substitute for real features).

Untrusted pickles can run arbitrary code when unpickled; only plain containers and numpy
arrays are allowed here, anything else is refused with an error naming the global. Pickles of
protocols 0-2 written by Python 3 store bytes (numpy arrays' data) as _codecs.encode(str,
'latin1') and b'' as bytes(): these globals, and numpy's _reconstruct, are admitted only with
the arguments numpy and pickle use (_GUARDED). What a pickle holds is bounded by its size: no
shared containers or large leaves, and its arrays' bytes together at most the file's.
"""
import _compat_pickle
import hashlib
import io
import os
import pickle

import numpy as np

from mibcore.errors import DataError

# Plain containers and numpy arrays. Not bytes/bytearray: bytes(3_000_000_000) is a 28-byte
# pickle that allocates 3 GB before any check could run (pickles of protocol 3+ store bytes
# with their own opcodes and never need the global).
_ALLOWED = {
    ("builtins", name) for name in ("list", "dict", "tuple", "set", "frozenset", "str", "int", "float", "bool",
                                     "complex", "slice")
} | {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict")} | {
    (module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")
}


def _latin1_encode(text, encoding):
    """_codecs.encode as pickles of protocols 0-2 written by Python 3 store bytes (numpy arrays'
    data): encode(str, 'latin1'), which makes len(text) bytes of a text the pickle holds."""
    if type(text) is not str or encoding != "latin1":
        raise pickle.UnpicklingError(
            f"refused to unpickle _codecs.encode with arguments of types ({type(text).__name__}, "
            f"{type(encoding).__name__}): only encode(str, 'latin1') is admitted (bytes in pickles of protocol < 3)")
    return text.encode("latin1")


def _empty_bytes(*args):
    """builtins.bytes as the same pickles store b'': bytes() without arguments only."""
    if args:
        raise pickle.UnpicklingError(
            "refused to unpickle global builtins.bytes with arguments: only bytes() (b'', as pickles of "
            "protocol < 3 store it) is admitted")
    return b""


def _empty_array(subtype, shape, dtype):
    """numpy's _reconstruct as numpy pickles an array: an empty array that __setstate__ then
    fills from the pickle's own bytes (never a shape to allocate)."""
    if subtype is not np.ndarray or not isinstance(shape, tuple) or 0 not in shape:
        raise pickle.UnpicklingError(
            f"refused to unpickle numpy _reconstruct({getattr(subtype, '__name__', subtype)}, {shape!r:.40}, ...): "
            "only the empty ndarray numpy pickles arrays with is admitted")
    return np.ndarray(shape, dtype=dtype)


# Globals admitted only through a wrapper that checks their arguments.
_GUARDED = {("_codecs", "encode"): _latin1_encode, ("builtins", "bytes"): _empty_bytes} | {
    (module, "_reconstruct"): _empty_array for module in ("numpy.core.multiarray", "numpy._core.multiarray")
}
# Bounds on what a loaded pickle may hold. A container, or a large array or string (4 KB and
# more), referenced twice is refused: shared references let a 1 KB pickle describe 2^30
# elements (which converting it then builds), and a dataset does not share them. Without such
# sharing, what a pickle holds is bounded by its size (a small leaf, under 4 KB, shared costs a
# memo reference of a few bytes each time: at most a few hundred times its size).
MAX_DEPTH = 64
MAX_OBJECTS = 50_000_000


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Python 2 names (protocol < 3: __builtin__.set) checked as the Python 3 ones pickle maps them to.
        mapped, mapped_name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        mapped = _compat_pickle.IMPORT_MAPPING.get(mapped, mapped)
        if (mapped, mapped_name) in _GUARDED:
            return _GUARDED[mapped, mapped_name]
        if (mapped, mapped_name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused to unpickle global {mapped}.{mapped_name}: only plain containers and numpy arrays are allowed"
        )


def check_structure(obj, source, max_array_bytes=None):
    """Refuses shared containers, nesting deeper than MAX_DEPTH, more than MAX_OBJECTS objects
    (containers and object-array elements) and, given max_array_bytes (the pickle's size: an
    array's data comes from the pickle's bytes), arrays holding more in all; without recursion."""
    seen, count, stack = set(), 0, [(obj, 0)]
    arrays, array_bytes = set(), 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, np.ndarray) and not item.dtype.hasobject and id(item) not in arrays:
            # Distinct arrays can share one bytes object of the pickle (numpy keeps it as their
            # buffer): 1000 arrays over one memoized 1 MB string would stack into 1 GB.
            arrays.add(id(item))
            array_bytes += item.nbytes
            if max_array_bytes is not None and array_bytes > max_array_bytes:
                raise pickle.UnpicklingError(
                    f"{source}: refused: its arrays hold more than the pickle's {max_array_bytes} bytes (arrays "
                    "sharing their data describe more than the file holds)")
        if _is_large_leaf(item):
            # A large array or string referenced twice multiplies into what loading builds
            # (every row of a MAG-BERT split pointing at one 10 MB array).
            if id(item) in seen:
                raise pickle.UnpicklingError(
                    f"{source}: refused: a large array or string is referenced more than once (shared "
                    "references can describe exponentially large data)")
            seen.add(id(item))
            continue
        if isinstance(item, np.ndarray):
            if not item.dtype.hasobject:  # (structured dtypes with object fields are walked too)
                continue
            children = item.ravel().tolist()
        elif isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = item
        else:
            continue
        if not len(children):  # (empty containers amplify nothing; () is even a shared singleton)
            continue
        if id(item) in seen:
            raise pickle.UnpicklingError(
                f"{source}: refused: a container is referenced more than once (shared references can "
                "describe exponentially large data)")
        seen.add(id(item))
        if depth >= MAX_DEPTH:
            raise pickle.UnpicklingError(f"{source}: refused: containers nested deeper than {MAX_DEPTH} levels")
        count += len(children)
        if count > MAX_OBJECTS:
            raise pickle.UnpicklingError(f"{source}: refused: more than {MAX_OBJECTS} objects")
        stack.extend((child, depth + 1) for child in children)
    return obj


def _is_large_leaf(item):
    if isinstance(item, np.ndarray):
        return not item.dtype.hasobject and item.nbytes >= 4096
    return isinstance(item, (str, bytes)) and len(item) >= 4096


def restricted_load(path):
    """The object in the pickle at path, through RestrictedUnpickler and check_structure. An
    admitted global called with values it rejects (int('x'), numpy.dtype('?!')) is an
    UnpicklingError naming the reason."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            obj = RestrictedUnpickler(io.BufferedReader(f)).load()
        except (pickle.UnpicklingError, EOFError):
            raise
        except (ValueError, TypeError, OverflowError, AttributeError, KeyError, IndexError, MemoryError) as e:
            raise pickle.UnpicklingError(f"invalid pickle data ({type(e).__name__}: {e})"[:300]) from e
    return check_structure(obj, path, max_array_bytes=size)


def load(path, glove=None, text_dim=300, text_backbone=None, max_length=50):
    """`text_backbone` (a local Hugging Face model dir) adds "text_ids" token ids to each split:
    MAG-BERT words are tokenized like the paper's pipeline; MMSA's text_bert ids are used."""
    raw = restricted_load(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a dict of splits, got {type(raw).__name__}")
    if "valid" in raw:
        return from_mmsa(raw, path, with_ids=bool(text_backbone))
    if "dev" in raw:
        return from_mag_bert(raw, path, glove=glove, text_dim=text_dim, text_backbone=text_backbone,
                             max_length=max_length)
    raise DataError(f"{path}: unknown pickle layout (splits {sorted(raw)}); expected MMSA or MAG-BERT")


def _split(raw, name, kinds, source):
    """raw[name], which must exist and be an instance of `kinds`."""
    if name not in raw:
        raise DataError(f"{source}: missing split {name!r} (has {sorted(map(str, raw))})")
    if not isinstance(raw[name], kinds):
        raise DataError(f"{source}: split {name!r} has an unexpected type ({type(raw[name]).__name__})")
    return raw[name]


def _array(value, source, name):
    """np.asarray(value), or DataError naming the key (ragged lists cannot be one array)."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as e:
        raise DataError(f"{source}: {name} is not a regular array (ragged or mixed: {str(e).splitlines()[0]})") from e


def _features(value, source, name):
    """Features as float32 with NaN/Inf zeroed (MMSA's and MAG-BERT's acoustic features hold some);
    anything but real numbers is left as it is, for mibcore.data.checks to refuse."""
    arr = _array(value, source, name)
    return np.nan_to_num(arr.astype(np.float32)) if arr.dtype.kind in "biuf" else arr


def from_mmsa(raw, source="MMSA pickle", with_ids=False):
    out = {}
    for split, name in (("train", "train"), ("dev", "valid"), ("test", "test")):
        part = _split(raw, name, dict, source)
        for key in ("audio", "vision"):
            if key not in part:
                raise DataError(f"{source}: {name} has no {key!r} array (has {sorted(map(str, part))})")
        text = _array(part.get("text"), source, f"{name}/text")
        if text.ndim != 3:
            raise DataError(f"{source}: {name}/text must hold [N, T, D] text features (text_bert ids are not read)")
        labels = part.get("regression_labels", part.get("labels", {}).get("M") if isinstance(part.get("labels"), dict) else None)
        if labels is None:
            raise DataError(f"{source}: {name} has no regression_labels")
        labels = _array(labels, source, f"{name}/regression_labels")
        if not (labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1)):
            raise DataError(f"{source}: {name}/regression_labels must be [N] or [N, 1], got shape {labels.shape}")
        n = labels.shape[0]
        out[split] = {
            "text": text.astype(np.float32) if text.dtype.kind in "biuf" else text,
            "audio": _features(part["audio"], source, f"{name}/audio"),
            "visual": _features(part["vision"], source, f"{name}/vision"),
            "label": labels,
            "id": [str(i) for i in part.get("id", range(n))],
        }
        if with_ids:
            if "text_bert" not in part:
                raise DataError(f"{source}: {name} has no text_bert token ids for the text backbone")
            out[split]["text_ids"] = np.asarray(part["text_bert"])[:, 0, :].astype(np.int64)
    return out


class HashingEmbedding:
    """Deterministic pseudo-random word vectors (sha256 of the word): an offline placeholder."""

    def __init__(self, dim):
        self.dim = dim

    def __call__(self, word):
        seed = int.from_bytes(hashlib.sha256(word.lower().encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32) / np.sqrt(self.dim)


def read_glove(path):
    table = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip().split(" ")
            table[parts[0]] = np.asarray(parts[1:], dtype=np.float32)
    if not table:
        raise DataError(f"{path}: the GloVe file holds no word vectors")
    dim = len(next(iter(table.values())))
    return lambda word: table.get(word, table.get(word.lower(), np.zeros(dim, np.float32))), dim


def from_mag_bert(raw, source="MAG-BERT pickle", glove=None, text_dim=300, text_backbone=None, max_length=50):
    embed, dim = read_glove(glove) if glove else (HashingEmbedding(text_dim), text_dim)
    out = {}
    for split in ("train", "dev", "test"):
        rows = _split(raw, split, (list, tuple), source)
        if not rows:
            raise DataError(f"{source}: split {split!r} is empty")
        text, audio, visual, labels, ids = [], [], [], [], []
        for k, item in enumerate(rows):
            words, vis, aco, label = _mag_bert_row(item, f"{source}: {split}[{k}]", visual[:1], audio[:1])
            text.append(np.stack([embed(w) for w in words]) if len(words) else np.zeros((0, dim), np.float32))
            audio.append(aco)
            visual.append(vis)
            labels.append(label)
            ids.append(str(item[2]))
        T = max(t.shape[0] for t in text)
        pad = lambda seqs: np.stack([np.pad(s, ((T - s.shape[0], 0), (0, 0))) for s in seqs])  # noqa: E731
        # Left padding keeps the last word at the last time step, which the models read out.
        out[split] = {"text": pad(text), "audio": np.nan_to_num(pad(audio)), "visual": np.nan_to_num(pad(visual)),
                      "label": np.asarray(labels, np.float32), "id": ids}
        if text_backbone:
            from mibcore.models.text_backbone import tokenize

            out[split]["text_ids"] = tokenize(text_backbone, [item[0][0] for item in rows], max_length)
    return out


def _mag_bert_row(item, where, first_visual, first_acoustic):
    """(words, visual [T, Dv], acoustic [T, Da], label) of one row, checked: word-aligned real
    features as wide as the split's first row's, and one real-number label."""
    try:
        (words, vis, aco), label, _ = item
    except (TypeError, ValueError):
        raise DataError(f"{where} is not ((words, visual, acoustic), label, segment)") from None
    if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
        raise DataError(f"{where}: the words must be a list of strings")
    arrays = []
    for name, value, first in (("visual", vis, first_visual), ("acoustic", aco, first_acoustic)):
        arr = _array(value, where, name)
        if arr.dtype.kind not in "biuf" or arr.ndim != 2:
            raise DataError(f"{where}: {name} must be real numbers [T, D], got {arr.dtype} {arr.shape}")
        if first and arr.shape[1] != first[0].shape[1]:
            raise DataError(f"{where}: {name} has {arr.shape[1]} features, the split's first row {first[0].shape[1]}")
        arrays.append(arr.astype(np.float32))
    vis, aco = arrays
    if len(words) != vis.shape[0] or len(words) != aco.shape[0]:
        raise DataError(f"{where} is not word-aligned ({len(words)} words, visual {vis.shape}, acoustic {aco.shape})")
    label = _array(label, where, "label")
    if label.dtype.kind not in "biuf" or label.size != 1:
        raise DataError(f"{where}: the label must be one real number, got {label.dtype} of shape {label.shape}")
    return words, vis, aco, float(label.reshape(-1)[0])
