"""What a TrainConfig builds: its dataset and its model, refused up front (UsageError) where they
would not fit in the machine's memory."""
import torch

from mibcore import models
from mibcore.data import load_dataset
from mibcore.data.checks import modalities_of
from mibcore.errors import UsageError
from mibcore.train.runtime import device_memory, memory_errors

FLOAT32 = 4
TRAINING_COPIES = 4  # a parameter's weights, its gradient and Adam's two moments


def load_data(config):
    """The dataset a config names: synthetic (sized by the config, seeded by its seed) or a file."""
    if config.data.startswith("synthetic"):
        n = config.synthetic_samples
        sizes = dict(n_train=n, n_dev=max(n // 4, 1), n_test=max(n // 4, 1))
        _check_synthetic_size(config, sizes)
        with memory_errors("--synthetic-samples / --seq-len"):
            return load_dataset(config.data, **sizes, seq_len=config.seq_len, seed=config.seed)
    return load_dataset(config.data, text_backbone=config.text_backbone or None,
                        max_text_length=config.max_text_length)


def _check_synthetic_size(config, sizes):
    """Refuses synthetic data larger than the machine's memory (its widths from a tiny sample)."""
    widths = sum(data_dims(load_dataset(config.data, n_train=1, n_dev=1, n_test=1, seq_len=1)).values())
    nbytes = sum(sizes.values()) * config.seq_len * widths * FLOAT32 * 2  # (x2: float64 while generated)
    memory = device_memory(torch.device("cpu"))
    if nbytes > memory:
        raise UsageError(f"--seq-len {config.seq_len} x --synthetic-samples {config.synthetic_samples}: the "
                         f"synthetic data would need about {nbytes / 2**30:.3g} GiB, more than this machine's "
                         f"{memory / 2**30:.3g} GiB; use smaller values")


def data_widths(split):
    """{"modalities": {name: features per step}, "output_dim"} of a split's features and labels
    (output_dim None without labels): the model sizes (MIBConfig fields) the data asks for."""
    label = split.get("label")
    return {"modalities": {m: int(split[m].shape[2]) for m in modalities_of(split)},
            "output_dim": None if label is None else 1 if label.ndim == 1 else int(label.shape[1])}


def data_dims(data):
    """The widths a model is built for, that checkpoints record: each modality's features, by
    name in the model's order, and the labels ("label": 1 regression; C emotion classes)."""
    widths = data_widths(data["train"])
    return {**widths["modalities"], "label": widths["output_dim"]}


def build_model(config, data=None, device=None, widths=None):
    """The config's model (on the CPU), sized to the data's feature dims and labels, or to
    `widths` (data_widths' keys; mibcore.train.best_model reads them from saved weights);
    UsageError where training it would not fit in the memory of `device` (default: the CPU)."""
    widths = widths or data_widths(data["train"])
    off = {} if config.dropouts else dict.fromkeys(models.DROPOUT_FIELDS, 0.0)
    options = dict(fusion=config.fusion, mode=config.mode, beta=config.beta, no_ib=config.no_ib, d=config.d,
                   **off, hidden=config.hidden, **widths)
    try:
        if not config.text_backbone:  # (a backbone is read from its files: its size is what it is)
            with torch.device("meta"):  # sized without allocating (and without drawing random numbers)
                _check_model_size(config, models.build(config.model, **options), device or torch.device("cpu"))
        with memory_errors("--hidden / --d"):
            return models.build(config.model, **options, text_backbone=config.text_backbone or None)
    except (ValueError, TypeError, FileNotFoundError) as e:  # the model's own checks of its options (d % heads,
        if isinstance(e, UsageError):                          # fusion, the data's modalities, ...)
            raise
        raise UsageError(f"invalid model options: {e}") from e


def _check_model_size(config, model, device):
    count = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    nbytes, memory = count * FLOAT32 * TRAINING_COPIES, device_memory(device)
    if nbytes > memory:
        raise UsageError(f"--hidden {config.hidden}, --d {config.d} (fusion {config.fusion}): the model has "
                         f"{count / 1e9:.3g}G parameters, {nbytes / 2**30:.3g} GiB to train (with gradients and "
                         f"Adam's state), more than the {memory / 2**30:.3g} GiB of {device}; use smaller values")
