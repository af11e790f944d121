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


def build_model(config, data):
    """The config's model, sized to the data's feature dims and labels (on the CPU)."""
    label = data["train"]["label"]
    off = {} if config.dropouts else dict.fromkeys(models.DROPOUT_FIELDS, 0.0)
    try:
        return models.build(
            config.model, fusion=config.fusion, mode=config.mode, beta=config.beta, no_ib=config.no_ib, d=config.d,
            **off, hidden=config.hidden, text_dim=data["train"]["text"].shape[2],
            audio_dim=data["train"]["audio"].shape[2], visual_dim=data["train"]["visual"].shape[2],
            output_dim=1 if label.ndim == 1 else label.shape[1], text_backbone=config.text_backbone or None,
        )
    except (ValueError, FileNotFoundError) as e:  # the model's own checks of its options (d % heads, fusion, ...)
        raise UsageError(f"invalid model options: {e}") from e

