"""The training config (TrainConfig: its fields, defaults and checks) and config files: JSON or
YAML, flat TrainConfig fields or MMSA-style per-model sections; dump_config writes what
load_config reads back. A file's `search` section is the search space of `mibcore tune`
(mibcore.tune.space), which train refuses."""
import contextlib
import dataclasses
import inspect
import json
import math
import re

from mibcore import models
from mibcore._optional import require
from mibcore.errors import UsageError
from mibcore.train import beta_schedule


AMP_MODES = ("none", "bf16", "fp16")


@dataclasses.dataclass
class TrainConfig:
    model: str = "cmib"             # the variant: emib | lmib | cmib | plain (no bottleneck)
    fusion: str = "concat"          # how the modalities are fused
    mode: str = "clean"             # clean | faithful (the paper's quirks; see mibcore.models.mib)
    beta: float = 1e-3              # the KL terms' weight (0: B-MIB); a schedule's peak
    kl_reduction: str = "mean"      # each KL term's reduction: mean (the paper's: over the batch and the d
                                    # latent dims) | batchmean (summed over the d dims, mean over the batch: d
                                    # x mean, so beta / d gives mean's gradient) | sum (B x d x mean)
    beta_schedule: str = "constant"  # the KL weight over the run: constant | linear (0 to beta over
                                    # --beta-warmup epochs, then beta) | cyclical (cycles of --beta-cycle
                                    # epochs, each ramping 0 to beta over its first --beta-ratio, then
                                    # beta; Fu et al. 2019); updated every step, recorded per epoch
    beta_warmup: float = 1.0        # linear: the epochs beta takes to rise from 0 (fractions too)
    beta_cycle: float = 2.0         # cyclical: the epochs of one cycle (fractions too)
    beta_ratio: float = 0.5         # cyclical: the fraction of each cycle that ramps, in (0, 1]
    no_ib: tuple = ()               # modalities without a unimodal bottleneck
    d: int = 50                     # the models' feature size (the paper: 50)
    hidden: int = 1024              # the encoders' FFN size
    dropouts: bool = True           # False turns every dropout off (for exactness checks)
    text_backbone: str = ""         # local Hugging Face model dir (text as token ids; never downloaded)
    backbone_lr: float = 1e-5       # the text backbone's learning rate (the paper's for BERT)
    max_text_length: int = 50       # token ids per sample with a text backbone (the paper: 50)
    data: str = "synthetic"         # synthetic | synthetic-emotion | path (.h5, .npz, MMSA or MAG-BERT .pkl)
    synthetic_samples: int = 512    # training samples of the synthetic data (dev/test: a quarter)
    seq_len: int = 20               # synthetic sequence length
    epochs: int = 10                # at most (early stopping may end the run sooner)
    batch_size: int = 32            # the global batch (split across DDP processes)
    lr: float = 1e-3                # Adam's learning rate (the paper: 2e-5 with BERT inputs)
    weight_decay: float = 0.0       # Adam's L2 penalty
    patience: int = 5               # epochs without a better dev metric before stopping early
    seed: int = 0                   # seeds the weights, the shuffles and every dropout and sample
    amp: str = "none"               # mixed precision (fp16 on GPUs only)
    device: str = "auto"             # auto (cuda if there, else cpu) | cpu | cuda | cuda:N
    out: str = "runs/mib"            # the run folder (checkpoints, metrics, history, curves)
    resume: bool = True             # resume from OUT's checkpoint when there is one
    progress: bool = True           # a tqdm bar on a terminal; else one line per epoch on stderr
    quiet: bool = False             # neither the bar nor the epoch lines
    compile: object = False         # torch.compile the training steps (fullgraph without DDP): True (CLI
                                    # --compile) for the default mode, or a mode (--compile MODE): default |
                                    # reduce-overhead (CUDA graphs of the compiled steps) | max-autotune |
                                    # max-autotune-no-cudagraphs
    cuda_graphs: bool = False       # CUDA only: capture each training step (forward, loss, backward, Adam
                                    # with capturable=True) in one CUDA graph and replay it per batch; an
                                    # epoch's last, smaller batch runs eagerly; falls back to eager steps
                                    # (with a note) where the capture fails
    loss_every: int = 50            # read the training loss back to the host every N steps and at each
                                    # epoch's end (one device sync per read); a non-finite loss is caught at
                                    # the next read, naming its step

    def validate(self):
        """Raises UsageError naming the first bad field (types, choices, ranges); returns self."""
        _check_field_types(self)
        if self.model not in models.VARIANTS:
            raise UsageError(f"model must be one of {models.VARIANTS}, got {self.model!r}")
        if self.mode not in models.MODES:
            raise UsageError(f"mode must be {' or '.join(models.MODES)}, got {self.mode!r}")
        if not (isinstance(self.compile, bool) or self.compile in COMPILE_MODES):
            raise UsageError(f"compile must be true, false or a mode ({', '.join(COMPILE_MODES)}), "
                             f"got {self.compile!r}")
        if self.cuda_graphs and self.compile:
            raise UsageError("cuda_graphs and compile exclude each other (--compile reduce-overhead is "
                             "torch.compile's own CUDA graphs)")
        if self.cuda_graphs and self.amp == "fp16":
            raise UsageError("cuda_graphs does not run with amp='fp16' (its GradScaler reads the scale on the "
                             "host); use amp='bf16' or none")
        if self.kl_reduction not in models.KL_REDUCTIONS:
            raise UsageError(f"kl_reduction must be one of {', '.join(models.KL_REDUCTIONS)}, "
                             f"got {self.kl_reduction!r}")
        beta_schedule.check(self)
        if self.amp not in AMP_MODES:
            raise UsageError(f"amp must be {', '.join(AMP_MODES)}, got {self.amp!r}")
        for name in ("epochs", "batch_size", "patience", "synthetic_samples", "seq_len", "d", "hidden",
                     "max_text_length", "loss_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 <= self.seed < 2**63:  # torch.manual_seed's range, less the negative seeds numpy refuses
            raise UsageError(f"seed must be in [0, 2^63), got {self.seed!r}")
        if not self.out:
            raise UsageError("out must name the run folder, got ''")
        for name, positive in (("lr", True), ("backbone_lr", True), ("beta", False), ("weight_decay", False)):
            value = getattr(self, name)
            if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
                raise UsageError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
        return self


# torch.compile's modes (compile=True is the first).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def field_help():
    """{field: the comment beside it in TrainConfig's source}: the CLI's help text, written once.
    Empty where the source is not there to read (a package installed without its .py files)."""
    try:
        source = inspect.getsource(TrainConfig)
    except (OSError, TypeError):
        return {}
    helps, field = {}, None
    for line in source.splitlines():
        start = re.match(r"^    (\w+): [^=]+=[^#]*#\s*(.+?)\s*$", line)
        more = re.match(r"^\s+#\s*(.+?)\s*$", line)  # (a comment continued on the next lines)
        if start:
            field, helps[start[1]] = start[1], start[2]
        elif more and field:
            helps[field] += " " + more[1]
        else:
            field = None
    return helps


def _check_field_types(config):
    """Each field has its default's type (ints for floats too; no_ib: a tuple of str)."""
    for field in dataclasses.fields(config):
        value, default = getattr(config, field.name), field.default
        if field.name == "compile":  # a bool or a mode name (validate checks which)
            ok = isinstance(value, (bool, str))
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float) if isinstance(default, float) else int) and not isinstance(value, bool)
        elif isinstance(default, tuple):
            ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise UsageError(f"{field.name} must be of type {type(default).__name__}, got {value!r}")


def config_from_dict(values):
    """The TrainConfig of a stored config (a checkpoint's): keys of no field are dropped (a field
    removed since), missing fields take their defaults, no_ib becomes a tuple. Not validated."""
    config = TrainConfig(**{k: v for k, v in values.items() if k in FIELDS})
    return dataclasses.replace(config, no_ib=tuple(config.no_ib))


def _is_yaml(path):
    return path.endswith((".yaml", ".yml"))


def _yaml(what):
    return require("yaml", what)


def read_config_file(path):
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


SEARCH = "search"  # a config file's search space, read by `mibcore tune`


def load_config(path, overrides=None):
    """A TrainConfig from a JSON or YAML (.yaml, .yml) file: flat TrainConfig fields, or MMSA-style
    {model: {"commonParams": {...}, "datasetParams": {data: {...}}}} sections."""
    raw = read_config_file(path)
    if SEARCH in raw:
        raise UsageError(f"{path}: its `{SEARCH}` section is a search space for `mibcore tune`; train takes a "
                         "config without one (a tune writes the best as OUT/best.yaml)")
    return config_from_file(raw, path, overrides)


def config_from_file(raw, path, overrides=None):
    """load_config's TrainConfig of a config file's object (read_config_file's), `path` naming it."""
    stray = set(raw) - FIELDS - set(models.VARIANTS)
    if stray:
        raise UsageError(f"{path}: unknown config keys {sorted(stray)}")
    values = {k: v for k, v in raw.items() if k in FIELDS}
    model = (overrides or {}).get("model", values.get("model", TrainConfig.model))
    section = raw.get(model, {})
    if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
        raise UsageError(f"{path}: section {model!r} must map commonParams / datasetParams to objects")
    values.update(section.get("commonParams", {}))
    data = (overrides or {}).get("data", values.get("data", TrainConfig.data))
    values.update(section.get("datasetParams", {}).get(data, {}))
    unknown = set(values) - FIELDS
    if unknown:
        raise UsageError(f"{path}: unknown config keys {sorted(unknown)}")
    if _is_yaml(path):
        _yaml_floats(values)
    values.update(overrides or {})
    if isinstance(values.get("no_ib"), list):
        values["no_ib"] = tuple(values["no_ib"])
    return TrainConfig(**values).validate()
