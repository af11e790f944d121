"""Benchmark cases: an operator, a shape, and how to build inputs for each provider.

The operator cases are those their specs declare (OpSpec.benchmarks, mibcore/ops/<op>.py). A
provider is a backend name ('reference', 'cpu', 'triton', 'cuda'), 'torch' (the spec's baseline
written with torch's modules, e.g. nn.Dropout's F.dropout), 'compile' (that baseline, else the
reference, under torch.compile) or, on GPUs, 'cublas' (the spec's GEMMs alone on the operands
materialized beforehand, no dropout: a floor, not a drop-in). The backends are timed through the
public functional API, so the timings include argument checks and dispatch, as a user sees them.
The first provider of a case is its baseline: the eager reference, 'torch' where the spec has a
baseline, the paper's model ('paper') for the training cases.
"""
import contextlib
import dataclasses
from typing import Callable

import torch

import mibcore
from .paper_model import PaperCMIB
from mibcore import models
from mibcore.data import MultimodalDataset, make_synthetic
from mibcore.ops import SPECS
from mibcore.train import engine


@dataclasses.dataclass
class Case:
    op: str
    shape: str           # label, e.g. "32x50"
    kind: str            # "paper" or "scale"
    make: Callable       # (device, provider) -> (fn(*tensors) -> tensor outputs, tensors requiring grad)
    bytes_moved: int     # forward + backward bytes at the memory floor (elementwise ops)
    flops: int           # forward + backward flops (GEMM ops); 0 for elementwise
    compile: bool = True  # also time torch.compile of the baseline
    providers: tuple = ()  # explicit providers, the baseline first; "*": the fused backends serving op
    train: bool = False    # make -> (Trainer, batches) instead of (fn, tensors)


# --- Operators: the cases each operator's spec declares (OpSpec.benchmarks).

def _op_case(spec, bench):
    def make(device, provider):
        sample = bench.make(device).map(lambda t: t.detach().requires_grad_() if t.is_floating_point() else t)
        if provider == "cublas":
            return spec.gemm_floor(sample)
        if provider == "compile":
            # (dynamo's cache is per code object, shared by every case: reset so that no case
            # runs past its recompile limit, i.e. eagerly)
            torch._dynamo.reset()
            compiled = torch.compile(lambda: sample.call(spec.baseline or spec.function), dynamic=False)
            return _under_backend("reference", compiled), sample.tensors()
        if provider == "torch":
            return (lambda *_: sample.call(spec.baseline)), sample.tensors()
        return _under_backend(provider, lambda: sample.call(spec.function)), sample.tensors()

    providers = ("torch", "*", "compile") if spec.baseline else ()
    return Case(spec.name, bench.label, bench.kind, make, bench.bytes_moved, bench.flops, providers=providers)


def _under_backend(backend, call):
    def fn(*_):  # (the sample holds the tensors the runner passes)
        with mibcore.backends.use(backend):
            return call()
    return fn


def _op_cases(quick):
    return [_op_case(spec, bench) for spec in SPECS.values() for bench in spec.benchmarks() if bench.quick or not quick]


# --- Training: the paper's C-MIB (benchmarks/paper_model.py) against mibcore's, whole steps.

# Eager providers before compiled ones: a process that ran inductor's OpenMP kernels may time
# later eager code differently (unverified here; this orders the risk away from the baseline).
TRAIN_PROVIDERS = ("paper", "mibcore-reference", "mibcore", "paper-compile", "mibcore-compile")
QUICK_TRAIN_PROVIDERS = ("paper", "mibcore-reference", "mibcore")  # compiling takes minutes here


class Trainer:
    """A model, Adam (lr 2e-5, the paper's) and its forward + loss, possibly compiled; `backend`
    is the mibcore backend it runs under (None for the paper's model, which gets torch's default
    Adam as the paper's code; mibcore's models get the optimizer of mibcore's training engine)."""

    def __init__(self, model, backend=None, compile=False):
        self.model = model.train()  # all dropouts on
        self.backend = backend
        self.compiled = compile
        self.note = ""
        if backend is None:
            self.optimizer = torch.optim.Adam(model.parameters(), lr=2e-5)
        else:
            self.optimizer = engine.adam(model.parameters(), lr=2e-5)
        self._loss = lambda t, a, v, y: model.loss(model(t, a, v), y)

    def _context(self):
        return mibcore.backends.use(self.backend) if self.backend else contextlib.nullcontext()

    def compile(self, example):
        """torch.compile of the forward + loss: fullgraph=True, else (a graph break) the default
        with a note. Compiles now (one forward + backward on `example`)."""
        eager = self._loss
        for fullgraph in (True, False):
            self._loss = torch.compile(eager, fullgraph=fullgraph, dynamic=False)
            try:
                self.step(*example)
                return self
            except Exception as error:  # noqa: BLE001 - any failure of fullgraph is a graph break to report
                if not fullgraph:
                    raise
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                self.note = f"fullgraph=True failed ({type(error).__name__}: {first[:120]}); default torch.compile"

    def loss(self, *batch):
        with self._context():
            return self._loss(*batch)

    def step(self, *batch):
        """One training step: zero_grad, forward + loss, backward, Adam."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(*batch)
        loss.backward()
        self.optimizer.step()
        return loss

    def run(self, batches):
        """One step per batch of the iterable `batches` (a step, or an epoch)."""
        for batch in batches:
            self.step(*batch)


def make_trainer(provider, fusion, device, example):
    torch.manual_seed(0)
    if provider.startswith("paper"):
        model, backend = PaperCMIB(fusion), None
    else:
        model = models.build("cmib", fusion=fusion, mode="faithful")  # the paper's loss, as the baseline's
        backend = "reference" if provider == "mibcore-reference" else "auto"
    trainer = Trainer(model.to(device), backend, compile=provider.endswith("-compile"))
    return trainer.compile(example) if trainer.compiled else trainer


def _paper_batch(device, batch, seq_len, generator=None):
    dims = (768, 74, 47)  # BERT-base features, COVAREP, Facet (MOSI)
    xs = [torch.randn(batch, seq_len, n, generator=generator).to(device) for n in dims]
    return (*xs, torch.randn(batch, generator=generator).clamp(-3, 3).to(device))


def _train_step_case(fusion, quick, batch=32, seq_len=50):
    """forward + loss + backward + Adam on one fixed batch at the paper's shapes: 768-d text
    features, 74-d audio, 47-d visual, T = 50, d = 50, hidden 1024, all dropouts on.
    make -> (trainer, batches): batches() yields the step's one batch."""
    def make(device, provider):
        example = _paper_batch(device, batch, seq_len, torch.Generator().manual_seed(0))
        return make_trainer(provider, fusion, device, example), lambda: [example]

    providers = QUICK_TRAIN_PROVIDERS if quick else TRAIN_PROVIDERS
    return Case("train_step", f"cmib {fusion} B{batch} T{seq_len}", "paper", make, 0, 0,
                providers=providers, train=True)


def _train_epoch_case(fusion, quick, n_train=128, batch=32, seq_len=50):
    """One epoch on mibcore's synthetic dataset (n_train samples in shuffled batches, the
    batches indexed out of the dataset inside the timed loop, as a training loop does)."""
    def make(device, provider):
        split = make_synthetic(n_train=n_train, n_dev=1, n_test=1, seq_len=seq_len)["train"]
        data = MultimodalDataset(split)
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(0)).split(batch)

        def batches():
            return (tuple(t.to(device) for t in data[idx]) for idx in order)

        return make_trainer(provider, fusion, device, next(batches())), batches

    providers = QUICK_TRAIN_PROVIDERS if quick else TRAIN_PROVIDERS
    return Case("train_epoch", f"cmib {fusion} synthetic N{n_train} B{batch} T{seq_len}", "paper", make, 0, 0,
                providers=providers, train=True)


def all_cases(quick=False):
    return [*_op_cases(quick), _train_step_case("concat", quick), _train_step_case("tensor", quick),
            _train_epoch_case("concat", quick)]


def _fused_backends(op, device):
    """The backends other than the reference serving `op` on `device` (the Triton interpreter is
    excluded: it is a correctness tool, hundreds of times slower)."""
    names = []
    for name in mibcore.backends.available(device):
        interpreted = name == "triton" and torch.device(device).type == "cpu"
        if name != "reference" and op in mibcore.backends.BACKENDS[name].ops and not interpreted:
            names.append(name)
    return names


def providers(case, device):
    """Providers to time for a case on `device`, the baseline first: the case's own list ("*"
    expanded to the fused backends), else the eager reference, the fused backends, then
    torch.compile of the reference."""
    if case.providers:
        return [n for p in case.providers for n in (_fused_backends(case.op, device) if p == "*" else [p])]
    cublas = ["cublas"] if SPECS[case.op].gemm_floor and torch.device(device).type == "cuda" else []
    return ["reference", *_fused_backends(case.op, device), *cublas] + (["compile"] if case.compile else [])
