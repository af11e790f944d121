"""What a TrainConfig builds: its dataset and its model."""
from mibcore import models
from mibcore.data import load_dataset
from mibcore.errors import UsageError


def load_data(config):
    """The dataset a config names: synthetic (sized by the config, seeded by its seed) or a file."""
    if config.data.startswith("synthetic"):
        n = config.synthetic_samples
        return load_dataset(config.data, n_train=n, n_dev=max(n // 4, 1), n_test=max(n // 4, 1),
                            seq_len=config.seq_len, seed=config.seed)
    return load_dataset(config.data, text_backbone=config.text_backbone or None,
                        max_text_length=config.max_text_length)


def data_widths(split):
    """{"text_dim", "audio_dim", "visual_dim", "output_dim"} of a split's features and labels
    (output_dim None without labels): the model sizes (MIBConfig fields) the data asks for."""
    label = split.get("label")
    return {**{f"{m}_dim": split[m].shape[2] for m in ("text", "audio", "visual")},
            "output_dim": None if label is None else 1 if label.ndim == 1 else label.shape[1]}


def build_model(config, data=None, widths=None):
    """The config's model (on the CPU), sized to the data's feature dims and labels, or to
    `widths` (data_widths' keys; mibcore.train.best_model reads them from saved weights)."""
    widths = widths or data_widths(data["train"])
    off = {} if config.dropouts else dict.fromkeys(models.DROPOUT_FIELDS, 0.0)
    try:
        return models.build(
            config.model, fusion=config.fusion, mode=config.mode, beta=config.beta, no_ib=config.no_ib, d=config.d,
            **off, hidden=config.hidden, **widths, text_backbone=config.text_backbone or None,
        )
    except (ValueError, FileNotFoundError) as e:  # the model's own checks of its options (d % heads, fusion, ...)
        raise UsageError(f"invalid model options: {e}") from e

