"""The training engine: seeds, Adam, best-dev selection, early stopping, atomic checkpoints with
exact resume, AMP, DDP through torchrun (gloo on CPU), torch.compile of the training steps, and
results over seeds.

Exact resume: the checkpoint written after each epoch holds the model, the optimizer, the
early-stopping state and the torch RNG state; each epoch's shuffling comes from a generator
seeded by (seed, epoch). An interrupted run resumed from its checkpoint therefore ends with the
same weights as an uninterrupted one. The checkpoint also holds the run's config: resuming with
another config is refused (see RESUMABLE), as is a damaged checkpoint; `resume=False` starts over.

The run folder: rank 0 holds an OS lock on its train.lock (with its PID and host) for the whole
training, so a second training on the same folder fails at once; under the lock, temporary files
that killed writes left are deleted. Errors a user can fix are mibcore.errors.UserError's.
"""
import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

from mibcore import models
from mibcore._io import atomic_write, atomic_write_text, remove_temporaries
from mibcore.data import MultimodalDataset, check_dataset, load_dataset
from mibcore.errors import CheckpointError, DivergedError, RunLockedError, UsageError
from mibcore.train import curves
from mibcore.train.metrics import emotion_metrics, regression_metrics

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
LOCK = "train.lock"
RUN_FILES = (CHECKPOINT, BEST, "history.json", "metrics.json", "curves.png")  # what starting over deletes
# The config fields a resumed run may change: the stopping rules (a resumed run then equals an
# uninterrupted run with the new values, as no schedule depends on them), the progress display,
# the resume flag and the folder's path. Any other difference is refused.
RESUMABLE = ("epochs", "patience", "progress", "quiet", "resume", "out")
RESTART_HINT = "rerun with --restart (or --no-resume) to start the run over"


@dataclasses.dataclass
class TrainConfig:
    model: str = "cmib"             # emib | lmib | cmib | plain
    fusion: str = "concat"          # concat | addition | multiplication | tensor | low-rank | graph | poe
    mode: str = "clean"             # clean | faithful (the paper's quirks; see mibcore.models.mib)
    beta: float = 1e-3              # 0: B-MIB
    no_ib: tuple = ()               # modalities without a unimodal bottleneck
    d: int = 50
    hidden: int = 1024
    dropouts: bool = True           # False turns every dropout off (for exactness checks)
    text_backbone: str = ""         # local Hugging Face model dir (text as token ids; never downloaded)
    backbone_lr: float = 1e-5       # the paper's learning rate for BERT
    max_text_length: int = 50       # token ids per sample with a text backbone (the paper: 50)
    data: str = "synthetic"         # synthetic | synthetic-emotion | path (.h5, .npz, MMSA or MAG-BERT .pkl)
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
    progress: bool = True           # a tqdm bar on a terminal; else one line per epoch on stderr
    quiet: bool = False             # neither the bar nor the epoch lines
    compile: bool = False           # torch.compile the model for training (fullgraph without DDP)

    def validate(self):
        """Raises UsageError naming the first bad field (types, choices, ranges); returns self."""
        _check_field_types(self)
        if self.model not in models.VARIANTS:
            raise UsageError(f"model must be one of {models.VARIANTS}, got {self.model!r}")
        if self.mode not in ("faithful", "clean"):
            raise UsageError(f"mode must be faithful or clean, got {self.mode!r}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise UsageError(f"amp must be none, bf16 or fp16, got {self.amp!r}")
        for name in ("epochs", "batch_size", "patience", "synthetic_samples", "seq_len", "d", "hidden",
                     "max_text_length"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name, positive in (("lr", True), ("backbone_lr", True), ("beta", False), ("weight_decay", False)):
            value = getattr(self, name)
            if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
                raise UsageError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
        return self


def _check_field_types(config):
    """Each field has its default's type (ints for floats too; no_ib: a tuple of str)."""
    for field in dataclasses.fields(config):
        value, default = getattr(config, field.name), field.default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float) if isinstance(default, float) else int) and not isinstance(value, bool)
        elif isinstance(default, tuple):
            ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise UsageError(f"{field.name} must be of type {type(default).__name__}, got {value!r}")


def _is_yaml(path):
    return path.endswith((".yaml", ".yml"))


def _yaml(what):
    try:
        import yaml
    except ImportError:
        raise UsageError(f"{what} needs PyYAML (pip install pyyaml), or use JSON") from None
    return yaml


def _read_config_file(path):
    """The object in a JSON or (by its extension) YAML config file."""
    kind = "YAML" if _is_yaml(path) else "JSON"
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise UsageError(f"config {path}: cannot read it ({e.strerror})") from e
    except ValueError as e:  # UnicodeDecodeError
        raise UsageError(f"config {path}: not valid {kind} ({e})") from e
    if kind == "JSON":
        try:
            raw = json.loads(text)
        except ValueError as e:  # JSONDecodeError
            raise UsageError(f"config {path}: not valid JSON ({e})") from e
    else:
        yaml = _yaml(f"config {path}: a YAML config")
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UsageError(f"config {path}: not valid YAML ({' '.join(str(e).split())})") from e
    if not isinstance(raw, dict):
        raise UsageError(f"config {path}: expected a {kind} object, got {type(raw).__name__}")
    return raw


def _yaml_floats(values):
    """PyYAML reads YAML 1.1, where 1e-3 (an exponent without a dot) is a string: such strings
    of float fields become the numbers they spell."""
    floats = {f.name for f in dataclasses.fields(TrainConfig) if isinstance(f.default, float)}
    for name in floats & set(values):
        if isinstance(values[name], str):
            with contextlib.suppress(ValueError):
                values[name] = float(values[name])


def dump_config(config, fmt="json"):
    """The config as JSON or YAML text, which load_config reads back to the same config."""
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
    if fmt == "yaml":
        return _yaml("--print-config yaml").safe_dump(values, sort_keys=False)
    return json.dumps(values, indent=2) + "\n"


def load_config(path, overrides=None):
    """A TrainConfig from a JSON or YAML (.yaml, .yml) file: flat TrainConfig fields, or MMSA-style
    {model: {"commonParams": {...}, "datasetParams": {data: {...}}}} sections."""
    raw = _read_config_file(path)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    stray = set(raw) - fields - set(models.VARIANTS)
    if stray:
        raise UsageError(f"{path}: unknown config keys {sorted(stray)}")
    values = {k: v for k, v in raw.items() if k in fields}
    model = (overrides or {}).get("model", values.get("model", TrainConfig.model))
    section = raw.get(model, {})
    if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
        raise UsageError(f"{path}: section {model!r} must map commonParams / datasetParams to objects")
    values.update(section.get("commonParams", {}))
    data = (overrides or {}).get("data", values.get("data", TrainConfig.data))
    values.update(section.get("datasetParams", {}).get(data, {}))
    unknown = set(values) - fields
    if unknown:
        raise UsageError(f"{path}: unknown config keys {sorted(unknown)}")
    if _is_yaml(path):
        _yaml_floats(values)
    values.update(overrides or {})
    if isinstance(values.get("no_ib"), list):
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
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(config.device)
    except RuntimeError:
        raise UsageError(f"device {config.device!r} is not a device name (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise UsageError(f"device {config.device!r}: this machine has {torch.cuda.device_count()} usable CUDA "
                         "devices (use --device cpu or auto)")
    return device


def _autocast(config, device):
    if config.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.amp == "bf16" else torch.float16
    if dtype == torch.float16 and device.type != "cuda":
        raise UsageError("amp='fp16' needs a GPU; use amp='bf16' on CPU")
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
    try:
        return models.build(
            config.model, fusion=config.fusion, mode=config.mode, beta=config.beta, no_ib=config.no_ib, d=config.d,
            **off, hidden=config.hidden, text_dim=data["train"]["text"].shape[2],
            audio_dim=data["train"]["audio"].shape[2], visual_dim=data["train"]["visual"].shape[2],
            output_dim=1 if label.ndim == 1 else label.shape[1], text_backbone=config.text_backbone or None,
        )
    except (ValueError, FileNotFoundError) as e:  # the model's own checks of its options (d % heads, fusion, ...)
        raise UsageError(f"invalid model options: {e}") from e


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


@contextlib.contextmanager
def _evaluation_rng(config, device):
    """Faithful mode samples z at evaluation. Its draws come from the default generators seeded
    by the run's seed inside a fork of the RNG state: evaluating the same weights always gives
    the same numbers (so `eval` reproduces metrics.json exactly), and the training's RNG stream
    is left as it was."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        yield


def evaluate(model, split, device, config, train_label_mean):
    with _evaluation_rng(config, device):
        pred = predict(model, split, device, config)
    bad = int(pred.size - np.count_nonzero(np.isfinite(pred)))
    if bad:
        raise DivergedError(f"{bad} of the model's {pred.size} predictions are NaN or Inf: its weights have diverged")
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


def adam(params, lr, weight_decay=0.0):
    """torch's Adam in its fused implementation (one kernel over all parameters): in the tensor-
    fusion training step of the benchmark suite (6.6M weights in the TFN Linear) the optimizer
    takes 25.5 ms a step with torch's default Adam (the paper's model) and 7.5 ms with this one
    (bench-results/results.md, the profiler breakdown). The same update rule; its rounding
    differs in the last bits."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


def _make_optimizer(config, model):
    """Adam; a text backbone's parameters get their own (smaller) learning rate."""
    backbone = [p for n, p in model.named_parameters() if n.startswith("text_backbone.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("text_backbone.")]
    groups = [{"params": rest}] + ([{"params": backbone, "lr": config.backbone_lr}] if backbone else [])
    return adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def _resume(config, model, optimizer):
    """(state, best weights): those of config.out's checkpoint when resuming, else a fresh start.

    Resuming loads the model, the optimizer and the torch RNG states (_rng_states) in place, so that the
    remaining epochs run exactly as in an uninterrupted run."""
    checkpoint_path = os.path.join(config.out, CHECKPOINT)
    if not (config.resume and os.path.exists(checkpoint_path)):
        return {"epoch": 0, "best_score": math.inf, "best_epoch": None, "bad_epochs": 0, "history": []}, None
    ckpt = _read_checkpoint(checkpoint_path, hint=RESTART_HINT)
    _check_same_config(ckpt, config, checkpoint_path)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    _restore_rng_states(ckpt)
    best_state = _read_checkpoint(os.path.join(config.out, BEST), hint=RESTART_HINT)["model"]
    return ckpt["state"], best_state


def _read_checkpoint(path, hint=""):
    """The dict in a checkpoint file (on the CPU); CheckpointError when it is missing, empty,
    damaged (a truncated file) or not one of mibcore's."""
    hint = f"; {hint}" if hint else ""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file{hint}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch reports truncation and foreign files in many ways (zip, pickle, EOF)
        reason = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({type(e).__name__}: {reason}){hint}") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a mibcore checkpoint (no model weights){hint}")
    return ckpt


def _check_same_config(ckpt, config, path):
    """Refuses to resume a checkpoint written with another config (but for RESUMABLE fields):
    resuming would keep its optimizer state and weights under a config they did not come from."""
    stored = ckpt.get("config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: written without its config (an older mibcore), so it cannot be checked "
                              f"to be this run's; {RESTART_HINT}")
    plain = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731
    defaults = dataclasses.asdict(TrainConfig())  # a field added since the checkpoint had its default
    changes = [f"{name} {stored.get(name, defaults[name])!r} -> {value!r}"
               for name, value in dataclasses.asdict(config).items()
               if name not in RESUMABLE and plain(stored.get(name, defaults[name])) != plain(value)]
    if changes:
        raise CheckpointError(f"{path} was written with another config ({'; '.join(changes)}); only "
                              f"{', '.join(RESUMABLE)} may change when resuming: rerun with the checkpoint's "
                              f"values, or {RESTART_HINT}")


def _rng_states():
    """The generator states a checkpoint keeps: the CPU generator's ("rng") and, where CUDA is in
    use (initialized in this process), every CUDA device's ("cuda_rng"), so that a resumed GPU run
    draws the same dropout masks and samples as an uninterrupted one."""
    states = {"rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda_rng"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(ckpt):
    """Restores what _rng_states saved. Checkpoints without "cuda_rng" (older ones, CPU runs) restore
    the CPU generator only; CUDA states are restored for the devices present (none without CUDA)."""
    torch.set_rng_state(ckpt["rng"])
    cuda_states = ckpt.get("cuda_rng")
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(cuda_states)[: torch.cuda.device_count()])


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
    if not (config.progress and rank == 0) or config.quiet:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=not sys.stderr.isatty())


def _epoch_lines(config, rank):
    """Whether to log one line per epoch: on rank 0 where no tqdm bar shows (off, or stderr is
    not a terminal: a log file, a CI job), unless quiet."""
    return rank == 0 and not config.quiet and not (config.progress and sys.stderr.isatty())


def _dev_summary(dev):
    """The dev metrics an epoch line shows: the paper's regression metrics, or the emotion means."""
    keys = [k for k in ("mae", "corr", "acc2", "f1") if k in dev] or sorted(k for k in dev if k.startswith("mean_"))
    return " ".join(f"{k} {dev[k]:.4f}" for k in keys)


def epoch_line(config, state, seconds):
    """The log line of state's last epoch: epoch, train loss, dev metrics, time, best so far."""
    last, best = state["history"][-1], state["best_epoch"]
    metric, _ = curves.dev_metric(last["dev"])
    best_value = state["history"][best - 1]["dev"][metric] if best else float("nan")
    return (f"epoch {last['epoch']}/{config.epochs}  train loss {last['train_loss']:.4f}  "
            f"dev {_dev_summary(last['dev'])}  {seconds:.1f} s  best {metric} {best_value:.4f} (epoch {best})")


def _train_one_epoch(model, ddp_model, optimizer, scaler, train_ds, batches, config, device, epoch):
    """One optimizer step per batch; returns the mean training loss over this process's samples.
    Raises DivergedError at the first loss that is not finite, before it reaches the weights."""
    model.train()
    total, count = 0.0, 0
    for step, batch in enumerate(batches, 1):
        text, audio, visual, label = (t.to(device) for t in train_ds[batch])
        optimizer.zero_grad(set_to_none=True)
        with _autocast(config, device):
            out = ddp_model(text, audio, visual)  # through DDP, which all-reduces the gradients
            loss = model.loss(out, label)
        value = float(loss.detach())
        if not math.isfinite(value):
            kept = f"; {config.out} keeps the checkpoint of epoch {epoch}" if epoch else ""
            raise DivergedError(f"training diverged: the loss is {value} at epoch {epoch + 1}, step {step} of "
                                f"{len(batches)} (try a smaller --lr){kept}")
        scaler.scale(loss.float()).backward()
        scaler.step(optimizer)
        scaler.update()
        total += value * len(batch)
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
                  "config": dataclasses.asdict(config), **_rng_states()}, os.path.join(config.out, CHECKPOINT))


def _result(config, state, test):
    """train()'s summary; dev_best is the dev metrics of best_epoch, the epoch kept in best.pt."""
    best_epoch = state.get("best_epoch")  # .get: checkpoints from before it was recorded lack it
    dev_best = state["history"][best_epoch - 1]["dev"] if best_epoch else {}  # history[i]: epoch i + 1
    return {"test": test, "dev_best": dev_best, "best_epoch": best_epoch, "epochs_run": state["epoch"],
            "config": dataclasses.asdict(config)}


def train(config: TrainConfig, data=None):
    """Trains one seed; writes checkpoint.pt, best.pt, history.json, metrics.json and curves.png
    (where matplotlib is installed) to config.out."""
    config.validate()
    rank, world = _distributed()
    with _run_folder(config, rank):
        return _train(config, data, rank, world)


@contextlib.contextmanager
def _run_folder(config, rank):
    """On rank 0 (the one that writes): holds the lock of config.out while the run lasts, and
    under it deletes the temporary files of killed writes and, when not resuming, the files of
    the run that was there."""
    if rank != 0:
        yield
        return
    os.makedirs(config.out, exist_ok=True)
    with lock_run_folder(config.out):
        remove_temporaries(config.out)
        if not config.resume:
            for name in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(config.out, name))
        yield


@contextlib.contextmanager
def lock_run_folder(folder):
    """An exclusive OS lock (flock) on folder/train.lock, which holds the holder's PID and host;
    RunLockedError at once when another process holds it. The OS releases it when the process
    ends, however it ends."""
    import fcntl
    import socket

    fd = os.open(os.path.join(folder, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").split() or ["?"]
            raise RunLockedError(f"{folder} is in use by another training (PID {' on '.join(holder[:2])}); "
                                 "wait for it to end or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _train(config, data, rank, world):
    device = _process_device(config, world)
    _seed_everything(config.seed)
    if data is None:
        data = _load_data(config)
    else:
        check_dataset(data, "data")
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
        epoch, start = state["epoch"], time.perf_counter()
        batches = _with_progress(_epoch_batches(config, len(train_ds), epoch, rank, world), config, epoch, rank)
        train_loss = _train_one_epoch(model, ddp_model, optimizer, scaler, train_ds, batches, config, device, epoch)
        dev = evaluate(model, data["dev"], device, config, train_mean)
        improved = _record_epoch(state, epoch, train_loss, dev)
        if improved:
            best_state = copy.deepcopy(model.state_dict())
        if rank == 0:
            _save_checkpoint(config, model, optimizer, state, best_state if improved else None)
        if _epoch_lines(config, rank):
            print(epoch_line(config, state, time.perf_counter() - start), file=sys.stderr, flush=True)
    if best_state is not None:
        model.load_state_dict(best_state)  # the test metrics are those of the best dev epoch
    test = evaluate(model, data["test"], device, config, train_mean)
    if rank == 0:
        _atomic_json(test, os.path.join(config.out, "metrics.json"))
        _atomic_json(state["history"], os.path.join(config.out, "history.json"))
        if state["history"] and curves.write_run_curves(config.out, state["history"]) is None and not config.quiet:
            print(f"mibcore: note: no {config.out}/curves.png: matplotlib is not installed", file=sys.stderr)
    return _result(config, state, test), model


def train_seeds(config: TrainConfig, seeds):
    """Trains one run per seed (config.out/seed-S) and writes results.md / results.csv with
    mean +- std of the test metrics over seeds."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"seeds: give each seed once (n counts runs), got {list(seeds)}")
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


def evaluate_checkpoint(path, data_spec=None, split="test", device=None):
    """Evaluates best.pt (or a run folder) on a split; returns the metrics. `device`: where to
    evaluate (default: the run's device setting)."""
    if os.path.isdir(path):
        path = os.path.join(path, BEST)
    ckpt = _read_checkpoint(path)
    if "optimizer" in ckpt:
        raise CheckpointError(f"{path} is the resume checkpoint of a run; evaluate its folder or its {BEST}")
    if not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"{path}: not a mibcore {BEST} (it holds no config)")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in fields})
    config = dataclasses.replace(config, no_ib=tuple(config.no_ib), data=data_spec or config.data,
                                 device=device or config.device)
    device = _device(config)
    data = _load_data(config)
    model = build_model(config, data)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: its weights do not fit the model for data {config.data!r} "
                              f"({str(e).splitlines()[0]} ...)") from e
    train_mean = _train_label_mean(data)
    return evaluate(model.to(device), data[split], device, config, train_mean)
