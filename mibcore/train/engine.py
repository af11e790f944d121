"""The training engine: seeds, Adam, best-dev selection, early stopping, atomic checkpoints with
exact resume, AMP, DDP through torchrun (gloo on CPU), torch.compile of the training steps, and
results over seeds.

Exact resume: the checkpoint written after each epoch holds the model, the optimizer, the
early-stopping state and the torch RNG state; each epoch's shuffling comes from a generator
seeded by (seed, epoch). An interrupted run resumed from its checkpoint therefore ends with the
same weights as an uninterrupted one.
"""
import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import sys

import numpy as np
import torch
import torch.distributed as dist

from mibcore import models
from mibcore._io import atomic_write, atomic_write_text
from mibcore.data import MultimodalDataset, load_dataset
from mibcore.train.metrics import emotion_metrics, regression_metrics

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


@dataclasses.dataclass
class TrainConfig:
    model: str = "cmib"             # emib | lmib | cmib | plain
    fusion: str = "concat"          # concat | addition | multiplication | tensor | low-rank | graph | poe
    mode: str = "faithful"          # faithful | clean (see mibcore.models.mib)
    beta: float = 1e-3              # 0: B-MIB
    no_ib: tuple = ()               # modalities without a unimodal bottleneck
    d: int = 50
    hidden: int = 1024
    dropouts: bool = True           # False turns every dropout off (for exactness checks)
    text_backbone: str = ""         # local Hugging Face model dir (text as token ids; never downloaded)
    backbone_lr: float = 1e-5       # the paper's learning rate for BERT
    max_text_length: int = 50       # token ids per sample with a text backbone (the paper: 50)
    data: str = "synthetic"         # synthetic | synthetic-emotion | path (.h5, MMSA or MAG-BERT .pkl)
    synthetic_samples: int = 512    # training samples of the synthetic data (dev/test: a quarter)
    seq_len: int = 20               # synthetic sequence length
    epochs: int = 10
    batch_size: int = 32            # the global batch (split across DDP processes)
    lr: float = 1e-3                # the paper uses 2e-5 for the non-BERT parameters with BERT inputs
    weight_decay: float = 0.0
    patience: int = 5               # early stopping on the dev metric
    seed: int = 0
    amp: str = "none"               # none | bf16 | fp16 (fp16 on GPUs)
    device: str = "auto"
    out: str = "runs/mib"
    resume: bool = True
    progress: bool = True
    compile: bool = False           # torch.compile the model for training (fullgraph without DDP)

    def validate(self):
        if self.model not in models.VARIANTS:
            raise ValueError(f"model must be one of {models.VARIANTS}, got {self.model!r}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"amp must be none, bf16 or fp16, got {self.amp!r}")
        for name in ("epochs", "batch_size", "patience", "synthetic_samples", "seq_len"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        return self


def load_config(path, overrides=None):
    """A TrainConfig from a JSON file: flat TrainConfig fields, or MMSA-style
    {model: {"commonParams": {...}, "datasetParams": {data: {...}}}} sections."""
    with open(path) as f:
        raw = json.load(f)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    stray = set(raw) - fields - set(models.VARIANTS)
    if stray:
        raise ValueError(f"{path}: unknown config keys {sorted(stray)}")
    values = {k: v for k, v in raw.items() if k in fields}
    model = (overrides or {}).get("model", values.get("model", TrainConfig.model))
    section = raw.get(model, {})
    values.update(section.get("commonParams", {}))
    data = (overrides or {}).get("data", values.get("data", TrainConfig.data))
    values.update(section.get("datasetParams", {}).get(data, {}))
    unknown = set(values) - fields
    if unknown:
        raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
    values.update(overrides or {})
    if "no_ib" in values:
        values["no_ib"] = tuple(values["no_ib"])
    return TrainConfig(**values).validate()


def _atomic_save(obj, path):
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _atomic_json(obj, path):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def _seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _distributed():
    """(rank, world_size), initializing the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def _device(config):
    if config.device != "auto":
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(config, device):
    if config.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.amp == "bf16" else torch.float16
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError("amp='fp16' needs a GPU; use amp='bf16' on CPU")
    return torch.autocast(device.type, dtype=dtype)


def _load_data(config):
    """The dataset a config names: synthetic (sized by the config, seeded by its seed) or a file."""
    if config.data.startswith("synthetic"):
        n = config.synthetic_samples
        return load_dataset(config.data, n_train=n, n_dev=max(n // 4, 1), n_test=max(n // 4, 1),
                            seq_len=config.seq_len, seed=config.seed)
    return load_dataset(config.data, text_backbone=config.text_backbone or None,
                        max_text_length=config.max_text_length)


def _train_label_mean(data):
    """The predict-the-mean baseline of regression metrics (None for emotion labels)."""
    label = data["train"]["label"]
    return float(np.mean(label)) if label.ndim == 1 else None


def build_model(config, data):
    label = data["train"]["label"]
    off = {} if config.dropouts else {"attn_dropout": 0.0, "relu_dropout": 0.0, "res_dropout": 0.0,
                                       "embed_dropout": 0.0, "tensor_dropout": 0.0}
    return models.build(
        config.model, fusion=config.fusion, mode=config.mode, beta=config.beta, no_ib=config.no_ib, d=config.d, **off,
        hidden=config.hidden, text_dim=data["train"]["text"].shape[2], audio_dim=data["train"]["audio"].shape[2],
        visual_dim=data["train"]["visual"].shape[2], output_dim=1 if label.ndim == 1 else label.shape[1],
        text_backbone=config.text_backbone or None,
    )


@torch.no_grad()
def predict(model, split, device, config, batch_size=256):
    model.eval()
    ds = MultimodalDataset(split, token_ids=bool(config.text_backbone))
    preds = []
    for start in range(0, len(ds), batch_size):
        text, audio, visual, _ = (t.to(device) for t in ds[start : start + batch_size])
        with _autocast(config, device):
            preds.append(model(text, audio, visual)["pred"].float().cpu())
    return torch.cat(preds).numpy() if preds else np.zeros((0, 1), np.float32)


def evaluate(model, split, device, config, train_label_mean):
    pred = predict(model, split, device, config)
    if split["label"].ndim == 1:
        return regression_metrics(pred[:, 0], split["label"], train_label_mean)
    return emotion_metrics(pred, split["label"])


def _dev_score(metrics):
    """Lower is better: MAE for regression, 1 - mean F1 for emotion."""
    return metrics["mae"] if "mae" in metrics else 1.0 - metrics["mean_f1"]


def _process_device(config, world):
    """This process's device: under DDP on GPUs, the GPU torchrun gave it (LOCAL_RANK)."""
    device = _device(config)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def _make_optimizer(config, model):
    """Adam; a text backbone's parameters get their own (smaller) learning rate."""
    backbone = [p for n, p in model.named_parameters() if n.startswith("text_backbone.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("text_backbone.")]
    groups = [{"params": rest}] + ([{"params": backbone, "lr": config.backbone_lr}] if backbone else [])
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def _resume(config, model, optimizer):
    """(state, best weights): those of config.out's checkpoint when resuming, else a fresh start.

    Resuming loads the model, the optimizer and the torch RNG state in place, so that the
    remaining epochs run exactly as in an uninterrupted run."""
    checkpoint_path = os.path.join(config.out, CHECKPOINT)
    if not (config.resume and os.path.exists(checkpoint_path)):
        return {"epoch": 0, "best_score": math.inf, "best_epoch": None, "bad_epochs": 0, "history": []}, None
    ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"])
    best_state = torch.load(os.path.join(config.out, BEST), map_location="cpu", weights_only=True)["model"]
    return ckpt["state"], best_state


def _epoch_batches(config, n_samples, epoch, rank, world):
    """This process's index batches for one epoch.

    The shuffle comes from a generator seeded by (seed, epoch), not from the global RNG, so a
    resumed run shuffles as an uninterrupted one; under DDP each process takes its slice of
    every global batch."""
    generator = torch.Generator().manual_seed(config.seed * 100003 + epoch)
    order = torch.randperm(n_samples, generator=generator)
    batches = [order[i : i + config.batch_size] for i in range(0, n_samples, config.batch_size)]
    if world == 1:
        return batches
    per_rank = max(config.batch_size // world, 1)
    return [batch[rank * per_rank : (rank + 1) * per_rank] for batch in batches]


def _with_progress(batches, config, epoch, rank):
    """The batches behind a tqdm bar: on rank 0 only, when asked for, and shown on a terminal only."""
    if not (config.progress and rank == 0):
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=not sys.stderr.isatty())


def _train_one_epoch(model, ddp_model, optimizer, scaler, train_ds, batches, config, device):
    """One optimizer step per batch; returns the mean training loss over this process's samples."""
    model.train()
    total, count = 0.0, 0
    for batch in batches:
        text, audio, visual, label = (t.to(device) for t in train_ds[batch])
        optimizer.zero_grad(set_to_none=True)
        with _autocast(config, device):
            out = ddp_model(text, audio, visual)  # through DDP, which all-reduces the gradients
            loss = model.loss(out, label)
        scaler.scale(loss.float()).backward()
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach()) * len(batch)
        count += len(batch)
    return total / max(count, 1)


def _record_epoch(state, epoch, train_loss, dev):
    """Adds an epoch to state: its history entry, the best dev epoch and the early-stopping count.
    Returns whether its dev score is a new best."""
    score = _dev_score(dev)
    improved = score < state["best_score"]  # strict: on a tie the earlier epoch stays the best
    if improved:
        state["best_score"], state["best_epoch"], state["bad_epochs"] = score, epoch + 1, 0
    else:
        state["bad_epochs"] += 1
    state["history"].append({"epoch": epoch + 1, "train_loss": train_loss, "dev": dev})
    state["epoch"] = epoch + 1
    return improved


def _save_checkpoint(config, model, optimizer, state, new_best):
    """Writes best.pt (new_best: the weights of a new best epoch, else None), then checkpoint.pt.

    Each file is written atomically, and best.pt first: an interruption between the two leaves
    the previous checkpoint.pt, and the resumed run redoes that epoch identically."""
    if new_best is not None:
        _atomic_save({"model": new_best, "config": dataclasses.asdict(config)}, os.path.join(config.out, BEST))
    _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                  "rng": torch.get_rng_state()}, os.path.join(config.out, CHECKPOINT))


def _result(config, state, test):
    """train()'s summary; dev_best is the dev metrics of best_epoch, the epoch kept in best.pt."""
    best_epoch = state.get("best_epoch")  # .get: checkpoints from before it was recorded lack it
    dev_best = state["history"][best_epoch - 1]["dev"] if best_epoch else {}  # history[i]: epoch i + 1
    return {"test": test, "dev_best": dev_best, "best_epoch": best_epoch, "epochs_run": state["epoch"],
            "config": dataclasses.asdict(config)}


def train(config: TrainConfig, data=None):
    """Trains one seed; writes checkpoint.pt, best.pt, history.json and metrics.json to config.out."""
    config.validate()
    rank, world = _distributed()
    device = _process_device(config, world)
    _seed_everything(config.seed)
    if data is None:
        data = _load_data(config)
    model = build_model(config, data).to(device)
    optimizer = _make_optimizer(config, model)
    train_mean = _train_label_mean(data)
    os.makedirs(config.out, exist_ok=True)
    state, best_state = _resume(config, model, optimizer)
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if config.compile:
        # Training steps only (evaluation stays eager: its batch sizes would recompile); the
        # checkpoints keep saving `model`, the uncompiled module (no `_orig_mod.` prefixes).
        # (DDP splits the graph at its gradient buckets, hence fullgraph only without it.)
        ddp_model = torch.compile(ddp_model, fullgraph=world == 1)
    train_ds = MultimodalDataset(data["train"], token_ids=bool(config.text_backbone))
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    while state["epoch"] < config.epochs and state["bad_epochs"] < config.patience:
        epoch = state["epoch"]
        batches = _with_progress(_epoch_batches(config, len(train_ds), epoch, rank, world), config, epoch, rank)
        train_loss = _train_one_epoch(model, ddp_model, optimizer, scaler, train_ds, batches, config, device)
        dev = evaluate(model, data["dev"], device, config, train_mean)
        improved = _record_epoch(state, epoch, train_loss, dev)
        if improved:
            best_state = copy.deepcopy(model.state_dict())
        if rank == 0:
            _save_checkpoint(config, model, optimizer, state, best_state if improved else None)
    if best_state is not None:
        model.load_state_dict(best_state)  # the test metrics are those of the best dev epoch
    test = evaluate(model, data["test"], device, config, train_mean)
    if rank == 0:
        _atomic_json(test, os.path.join(config.out, "metrics.json"))
        _atomic_json(state["history"], os.path.join(config.out, "history.json"))
    return _result(config, state, test), model


def train_seeds(config: TrainConfig, seeds):
    """Trains one run per seed (config.out/seed-S) and writes results.md / results.csv with
    mean +- std of the test metrics over seeds."""
    runs = []
    for seed in seeds:
        cfg = dataclasses.replace(config, seed=seed, out=os.path.join(config.out, f"seed-{seed}"))
        runs.append(train(cfg)[0]["test"])
    keys = sorted(runs[0])
    rows = []
    for k in keys:
        values = np.array([r[k] for r in runs], dtype=np.float64)
        rows.append((k, float(np.mean(values)), float(np.std(values))))
    md = ["| metric | mean | std | n |", "| --- | ---: | ---: | ---: |"]
    md += [f"| {k} | {m:.4f} | {s:.4f} | {len(runs)} |" for k, m, s in rows]
    csv = ["metric,mean,std,n"] + [f"{k},{m},{s},{len(runs)}" for k, m, s in rows]
    for name, text in (("results.md", "\n".join(md) + "\n"), ("results.csv", "\n".join(csv) + "\n")):
        atomic_write_text(os.path.join(config.out, name), text)
    return {k: (m, s) for k, m, s in rows}


def evaluate_checkpoint(path, data_spec=None, split="test"):
    """Evaluates best.pt (or a run folder) on a split; returns the metrics."""
    if os.path.isdir(path):
        path = os.path.join(path, BEST)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    config = TrainConfig(**{**ckpt["config"], "no_ib": tuple(ckpt["config"]["no_ib"])})
    if data_spec:
        config = dataclasses.replace(config, data=data_spec)
    data = _load_data(config)
    model = build_model(config, data)
    model.load_state_dict(ckpt["model"])
    device = _device(config)
    train_mean = _train_label_mean(data)
    torch.manual_seed(config.seed)  # faithful mode samples z at evaluation: make it repeatable
    return evaluate(model.to(device), data[split], device, config, train_mean)
