"""Benchmark cases: an operator, a shape, and how to build inputs for each provider.

A provider is a backend name ('reference', 'cpu', 'triton', 'cuda'), 'compile' (the
reference under torch.compile) or, for tensor fusion on GPUs, 'cublas' (torch's GEMM on the
outer product materialized beforehand: the GEMMs alone, no dropout; a floor, not a drop-in).
Every other case calls the public functional API, so the timings include argument checks and
dispatch, as a user sees them. The first provider of a case is its baseline: the eager
reference, nn.Dropout's F.dropout ('torch') for the dropout operators, the paper's model
('paper') for the training cases.
"""
import contextlib
import dataclasses
import math
from typing import Callable

import torch
import torch.nn.functional as F

import mibcore
from .paper_model import PaperCMIB
from mibcore import functional as MF
from mibcore import models, reference
from mibcore.data import MultimodalDataset, make_synthetic
from mibcore.train import engine


@dataclasses.dataclass
class Case:
    op: str
    shape: str           # label, e.g. "32x50"
    kind: str            # "paper" or "scale"
    make: Callable       # device -> (fn(*tensors) -> tensor outputs, tensors requiring grad)
    bytes_moved: int     # forward + backward bytes at the memory floor (elementwise ops)
    flops: int           # forward + backward flops (GEMM ops); 0 for elementwise
    compile: bool = True  # also time torch.compile of the reference
    providers: tuple = ()  # explicit providers, the baseline first; "*": the fused backends serving op
    train: bool = False    # make -> (Trainer, batches) instead of (fn, tensors)


def _dtype_label(dtype):
    return "" if dtype == torch.float32 else f" {str(dtype).removeprefix('torch.')}"


def _reparameterize_kl_case(rows, cols, kind, dtype=torch.float32):
    def make(device, provider):
        mu = torch.randn(rows, cols, device=device, dtype=dtype, requires_grad=True)
        scale = torch.randn(rows, cols, device=device, dtype=dtype, requires_grad=True)

        def fn(m, s):
            if provider == "compile":
                return _compiled_reference_reparameterize_kl(m, s)
            with mibcore.backends.use(provider):
                return MF.reparameterize_kl(m, s)

        return fn, (mu, scale)

    # 8 elements moved per element at the floor: forward reads mu, scale and writes z; backward
    # reads grad_z, mu, scale and writes both gradients (32 bytes in fp32).
    label = f"{rows}x{cols}" + _dtype_label(dtype)
    return Case("reparameterize_kl", label, kind, make, 8 * dtype.itemsize * rows * cols, 0)


def _reference_reparameterize_kl(m, s):
    return reference.reparameterize_kl(m, s)


_compiled_reference_reparameterize_kl = torch.compile(_reference_reparameterize_kl, dynamic=False)


def _tensor_fusion_case(batch, dims, out, dropout, kind, dtype=torch.float32):
    fused_dim = math.prod(d + 1 for d in dims)

    def make(device, provider):
        inputs = [torch.randn(batch, d, device=device, dtype=dtype, requires_grad=True) for d in dims]
        weight = (torch.randn(out, fused_dim, device=device) / fused_dim**0.5).to(dtype).requires_grad_()
        bias = torch.zeros(out, device=device, dtype=dtype, requires_grad=True)
        if provider == "cublas":  # the GEMMs alone, on the outer product materialized beforehand
            with torch.no_grad():
                fused = reference.outer_product(inputs)
            return (lambda z, w, b: torch.nn.functional.linear(z, w, b)), (fused.requires_grad_(), weight, bias)

        def fn(*tensors):
            *xs, w, b = tensors
            if provider == "compile":
                return _compiled_reference_tensor_fusion(xs, w, b, dropout)
            with mibcore.backends.use(provider):
                return MF.tensor_fusion(xs, w, b, dropout=dropout)

        return fn, (*inputs, weight, bias)

    label = f"B{batch} {'x'.join(map(str, dims))}->{out}" + (f" p={dropout}" if dropout else "") + _dtype_label(dtype)
    # forward GEMM 2*B*N*out, backward dW and d(outer) 2*B*N*out each.
    return Case("tensor_fusion", label, kind, make, 0, 6 * batch * fused_dim * out)


def _reference_tensor_fusion(xs, w, b, dropout):
    return reference.tensor_fusion(list(xs), w, b, dropout=dropout)


_compiled_reference_tensor_fusion = torch.compile(_reference_tensor_fusion, dynamic=False)


def _low_rank_fusion_case(batch, dims, out, rank, kind):
    def make(device, provider):
        inputs = [torch.randn(batch, d, device=device, requires_grad=True) for d in dims]
        factors = [(torch.randn(rank, d + 1, out, device=device) * 0.1).requires_grad_() for d in dims]
        rank_weights = torch.randn(1, rank, device=device, requires_grad=True)
        bias = torch.zeros(1, out, device=device, requires_grad=True)
        n = len(dims)

        def fn(*tensors):
            xs, fs, w, b = tensors[:n], tensors[n:2 * n], tensors[2 * n], tensors[2 * n + 1]
            if provider == "compile":
                return _compiled_reference_low_rank_fusion(xs, fs, w, b)
            with mibcore.backends.use(provider):
                return MF.low_rank_fusion(xs, fs, w, b)

        return fn, (*inputs, *factors, rank_weights, bias)

    label = f"B{batch} {'x'.join(map(str, dims))}->{out} r{rank}"
    flops = 6 * batch * rank * sum(d + 1 for d in dims) * out
    return Case("low_rank_fusion", label, kind, make, 0, flops)


def _reference_low_rank_fusion(xs, fs, w, b):
    return reference.low_rank_fusion(list(xs), list(fs), w, b)


_compiled_reference_low_rank_fusion = torch.compile(_reference_low_rank_fusion, dynamic=False)


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


# --- Dropout operators against nn.Dropout's F.dropout (the baseline provider "torch").

_DROPOUT_OPS = {
    # op: (inputs, the torch formulation, mibcore's, elements moved per element at the floor:
    # forward reads the inputs and writes the output, backward reads grad (and for relu_dropout
    # the output) and writes each input's grad; the mask is regenerated, never stored)
    "dropout": (1, lambda x, p: F.dropout(x, p, True), lambda x, p: MF.dropout(x, p), 4),
    "dropout_add": (2, lambda x, h, p: x + F.dropout(h, p, True), lambda x, h, p: MF.dropout_add(x, h, p), 6),
    "relu_dropout": (1, lambda x, p: F.dropout(torch.relu(x), p, True), lambda x, p: MF.relu_dropout(x, p), 5),
}
_compiled_dropouts = {op: torch.compile(spec[1], dynamic=False) for op, spec in _DROPOUT_OPS.items()}


def _dropout_case(op, shape, p, kind):
    n_inputs, torch_fn, mibcore_fn, moved = _DROPOUT_OPS[op]

    def make(device, provider):
        tensors = tuple(torch.randn(shape, device=device, requires_grad=True) for _ in range(n_inputs))

        def fn(*xs):
            if provider == "torch":
                return torch_fn(*xs, p)
            if provider == "compile":
                return _compiled_dropouts[op](*xs, p)
            with mibcore.backends.use(provider):
                return mibcore_fn(*xs, p)

        return fn, tensors

    label = "x".join(map(str, shape)) + f" p={p}"
    return Case(op, label, kind, make, moved * 4 * math.prod(shape), 0, providers=("torch", "*", "compile"))

def all_cases(quick=False):
    cases = [
        _reparameterize_kl_case(32, 50, "paper"),
        _reparameterize_kl_case(4096, 1024, "scale"),
        _tensor_fusion_case(32, (50, 50, 50), 50, 0.5, "paper"),
        _tensor_fusion_case(64, (64, 64, 64), 128, 0.0, "scale"),
        _low_rank_fusion_case(32, (50, 50, 50), 50, 5, "paper"),
        # the attention probabilities [B*H, T, T] and the FFN's hidden [B, T, 4d] of the encoders
        *(_dropout_case(op, shape, 0.5, "paper") for op in _DROPOUT_OPS for shape in ((160, 50, 50), (32, 50, 200))),
        _train_step_case("concat", quick),
        _train_step_case("tensor", quick),
        _train_epoch_case("concat", quick),
    ]
    if not quick:
        cases += [
            _reparameterize_kl_case(1024, 512, "scale"),
            _reparameterize_kl_case(4096, 1024, "scale", torch.float16),
            _reparameterize_kl_case(4096, 1024, "scale", torch.bfloat16),
            _tensor_fusion_case(256, (32, 32, 32), 64, 0.5, "scale"),
            _tensor_fusion_case(32, (50, 50, 50), 50, 0.5, "scale", torch.float16),
            _tensor_fusion_case(32, (50, 50, 50), 50, 0.5, "scale", torch.bfloat16),
            _low_rank_fusion_case(512, (128, 128, 128), 128, 8, "scale"),
        ]
    return cases


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
    cublas = ["cublas"] if case.op == "tensor_fusion" and torch.device(device).type == "cuda" else []
    return ["reference", *_fused_backends(case.op, device), *cublas] + (["compile"] if case.compile else [])
