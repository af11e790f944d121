"""The training step: no host sync, the loss read back every loss_every steps (divergence still
caught, naming its step), --compile MODE, and --cuda-graphs (its control flow on the CPU with a
stand-in for torch.cuda; the capture itself in the gpu-marked tests)."""
import contextlib
import dataclasses
import json
import types

import pytest
import torch

import mibcore
from mibcore.__main__ import main as cli
from mibcore.data import MultimodalDataset, make_synthetic
from mibcore.errors import DivergedError, UsageError
from mibcore.kernels import _launch
from mibcore.train import TrainConfig, cuda_graphs, engine, train
from mibcore.train.beta_schedule import BetaSchedule
from mibcore.train.build import build_model
from mibcore.train.host_sync import HostSyncError, no_host_sync
from mibcore.train.optimizer import make_optimizer
from mibcore.train.step import EagerStep, LossReader
from tests import utils

TINY = dict(d=10, hidden=16, synthetic_samples=32, seq_len=5, batch_size=8, progress=False, epochs=1)


def tiny_step(config, device="cpu"):
    """An EagerStep of config's model on its synthetic data, and the training dataset."""
    data = make_synthetic(n_train=config.synthetic_samples, n_dev=2, n_test=2, seq_len=config.seq_len)
    model = build_model(config, data).to(device).train()
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=False)
    step = EagerStep(model, model, make_optimizer(config, model), scaler, config, torch.device(device))
    return step, MultimodalDataset(data["train"])


def test_the_guard_catches_host_syncs():
    x = torch.ones(3)
    for read in (lambda: float(x.sum()), lambda: bool(x.any()), lambda: torch.equal(x, x), lambda: x.nonzero()):
        with pytest.raises(HostSyncError), no_host_sync():
            read()


def sync_cases():
    """(backend, fusion) pairs: each backend serving tensor fusion here, once (the cpu backend at
    its first level)."""
    names = list(dict.fromkeys(str(b) for b in utils.backends("tensor_fusion")))
    return [(name, "tensor") for name in names]


@pytest.mark.parametrize("backend, fusion", sync_cases())
def test_a_training_step_makes_no_host_sync(backend, fusion):
    config = TrainConfig(model="cmib", fusion=fusion, **TINY)
    step, ds = tiny_step(config)
    batch = ds[torch.arange(4 if backend == "triton" else 8)]
    # (Triton's launches recorded, not run: the host path is the same, without the interpreter's minutes)
    with mibcore.backends.use(backend), _launch.recording() if backend == "triton" else contextlib.nullcontext():
        step(*batch)  # (the first step creates Adam's state)
        with no_host_sync():
            loss = step(*batch)
            step(*batch, set_to_none=False)  # as --cuda-graphs runs a smaller batch
    assert loss.shape == ()


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_an_epoch_reads_the_loss_every_n_steps_and_at_its_end(monkeypatch, schedule):
    config = TrainConfig(model="cmib", loss_every=3, beta_schedule=schedule, **dict(TINY, synthetic_samples=52))
    step, ds = tiny_step(config)
    beta_schedule = BetaSchedule.of(config)
    step.beta = beta_schedule.weight_tensor("cpu")  # (as the engine builds it: None when constant)
    batches = list(torch.arange(52).split(8))  # 7 steps, the last of 4 samples
    reads, read = [], LossReader.read
    monkeypatch.setattr(LossReader, "read", lambda self: reads.append(len(self.window)) or read(self))
    # (on CPU tensors the reads' .tolist() is no dispatcher op: the guard checks everything else,
    # a varying beta's in-place refill included)
    with no_host_sync():
        mean, beta = engine._train_one_epoch(step, ds, batches, config, 0, beta_schedule, step.beta)
    assert [n for n in reads if n] == [3, 3, 1]  # after steps 3 and 6, and at the end
    assert isinstance(mean, float) and mean > 0
    assert beta == beta_schedule.at(0, 6, 7)
    assert beta == pytest.approx(config.beta * (1 if schedule == "constant" else 6 / 7), rel=1e-15)  # t = 6/7
    if step.beta is not None:
        assert step.beta.item() == torch.tensor(beta).item()  # (the last step's weight, in float32)


def test_loss_every_changes_no_number(tmp_path):
    base = TrainConfig(model="lmib", out=str(tmp_path / "a"), **dict(TINY, epochs=2))
    a, _ = train(dataclasses.replace(base, loss_every=1))
    b, _ = train(dataclasses.replace(base, out=str(tmp_path / "b"), loss_every=50))
    history = [json.load(open(tmp_path / run / "history.json")) for run in ("a", "b")]
    assert history[0] == history[1] and a["test"] == b["test"]


def test_a_late_read_still_names_the_diverged_step(tmp_path, monkeypatch):
    from mibcore.models.mib import MIB

    calls, loss = [], MIB.loss
    monkeypatch.setattr(MIB, "loss", lambda self, out, target: loss(self, out, target) * (
        float("nan") if calls.append(1) or len(calls) == 2 else 1.0))  # step 2 of 4
    with pytest.raises(DivergedError, match=r"loss is nan at epoch 1, step 2 of 4 \(read back at step 3; try"):
        train(TrainConfig(model="plain", out=str(tmp_path), loss_every=3, **TINY))
    assert len(calls) == 3  # the third step ran, then its read stopped the run
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("argv, value", [([], False), (["--compile"], True), (["--compile", "reduce-overhead"],
                                         "reduce-overhead"), (["--compile", "--no-compile"], False)])
def test_compile_takes_a_mode(capsys, argv, value):
    assert cli(["train", *argv, "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["compile"] == value


def test_cuda_graphs_refuses_a_cpu_device(tmp_path):
    with pytest.raises(UsageError, match=r"--cuda-graphs needs a CUDA device; this run's device is cpu"):
        train(TrainConfig(cuda_graphs=True, device="cpu", out=str(tmp_path), **TINY))


class FakeCuda:
    """torch.cuda as GraphedStep uses it, on the CPU: streams do nothing, a capture runs the step
    (as a real one would not) and records it, and a replay counts."""

    def __init__(self, fail=None):
        self.events, self.fail = [], fail

    def Stream(self, device):  # noqa: N802 - torch.cuda's name
        return types.SimpleNamespace(wait_stream=lambda other: None)

    def current_stream(self, device):
        return types.SimpleNamespace(wait_stream=lambda other: None)

    @contextlib.contextmanager
    def stream(self, stream):
        self.events.append("side")
        yield

    def CUDAGraph(self):  # noqa: N802
        return types.SimpleNamespace(replay=lambda: self.events.append("replay"))

    @contextlib.contextmanager
    def graph(self, graph, stream):
        self.events.append("capture")
        yield
        if self.fail:
            raise RuntimeError(self.fail)


class Recorder:
    """An EagerStep stand-in: records its calls' batch sizes and set_to_none."""

    def __init__(self, cuda):
        self.cuda, self.optimizer = cuda, types.SimpleNamespace(zero_grad=lambda set_to_none: None)

    def __call__(self, *batch, set_to_none=True):
        self.cuda.events.append(("step", len(batch[0]), set_to_none))
        return torch.tensor(float(len(batch[0])))


def run_graphed(cuda, sizes):
    step = cuda_graphs.GraphedStep(Recorder(cuda), torch.device("cpu"), cuda=cuda)
    return [float(step(*(torch.zeros(n, 2) for _ in range(4)))) for n in sizes]


def test_graphed_step_warms_up_captures_once_and_runs_other_shapes_eagerly():
    cuda = FakeCuda()
    assert run_graphed(cuda, [8, 8, 3, 8, 8, 8, 3, 8]) == [8, 8, 3, 8, 8, 8, 3, 8]
    assert cuda.events == ["side", ("step", 8, True)] * 2 + [("step", 3, True)] + ["side", ("step", 8, True)] + [
        "capture", ("step", 8, True), "replay",  # the 4th full batch: captured, then replayed
        "replay",                                # the 5th: replayed
        ("step", 3, False),                      # a smaller batch: eager, into the graph's gradients
        "replay"]


def test_a_failed_capture_falls_back_to_eager_steps_with_a_note(capsys):
    cuda = FakeCuda(fail="operation not permitted when stream is capturing")
    assert run_graphed(cuda, [8] * 6) == [8] * 6
    assert cuda.events == ["side", ("step", 8, True)] * 3 + ["capture", ("step", 8, True)] + [("step", 8, True)] * 3
    assert ("mibcore: note: --cuda-graphs: capturing the training step failed (RuntimeError: operation not "
            "permitted when stream is capturing); training with eager steps") in capsys.readouterr().err


# --- On a GPU (skipped without one): compiled, not yet run on a GPU.

@pytest.mark.gpu
def test_cuda_graph_replays_draw_fresh_masks_and_a_seed_repeats_the_run():
    config = TrainConfig(model="cmib", fusion="tensor", cuda_graphs=True, lr=1e-12, device="cuda", **TINY)

    def losses():
        torch.manual_seed(0)
        eager, ds = tiny_step(config, "cuda")
        step = cuda_graphs.GraphedStep(eager, torch.device("cuda"))
        batch = ds[torch.arange(8)]
        out = [step(*batch) for _ in range(cuda_graphs.WARMUP_STEPS + 3)]
        assert step.graph is not None and not step.failed
        return torch.stack(out).tolist()

    first = losses()
    replays = first[cuda_graphs.WARMUP_STEPS:]
    # lr ~ 0: the weights barely move, so different losses on one batch are different masks
    assert len(set(replays)) == len(replays), replays
    assert losses() == first


@pytest.mark.gpu
def test_a_cuda_graph_reads_each_steps_beta():
    # A beta schedule refills its tensor in place between replays: a replay after beta 0 -> 1e3
    # adds 1e3 x the four KL terms (each ~4.5 per dim at initialization) to a loss of a few units.
    config = TrainConfig(model="cmib", fusion="concat", cuda_graphs=True, lr=1e-12, device="cuda",
                         beta_schedule="linear", **TINY)
    eager, ds = tiny_step(config, "cuda")
    eager.beta = torch.zeros((), device="cuda")
    step = cuda_graphs.GraphedStep(eager, torch.device("cuda"))
    batch = ds[torch.arange(8)]
    losses = [step(*batch) for _ in range(cuda_graphs.WARMUP_STEPS + 2)]
    assert step.graph is not None and not step.failed
    eager.beta.fill_(1e3)
    losses.append(step(*batch))
    low, high = float(losses[-2]), float(losses[-1])
    assert low < 100 < 1000 < high, (low, high)


@pytest.mark.gpu
def test_cuda_graphs_training_learns(tmp_path):
    config = TrainConfig(model="cmib", fusion="tensor", cuda_graphs=True, device="cuda", lr=3e-3,
                         out=str(tmp_path), **dict(TINY, synthetic_samples=160, epochs=6))
    result, _ = train(config)
    assert result["test"]["mae"] < 0.8 * result["test"]["baseline_mae"], result["test"]


def test_the_graph_step_benchmark_times_eager_steps_on_the_cpu(capsys):
    """benchmarks.graph_step (the device check's training-step table) on the CPU: its eager rows,
    through the engine's own EagerStep; the CUDA-graph rows need a GPU (gpu-marked tests)."""
    from benchmarks import graph_step

    graph_step.main(["--device", "cpu", "--backend", "cpu", "--steps", "1", "--repeats", "1", "--warmup", "1"])
    table = capsys.readouterr().out.split("| --- | --- | ---: | ---: |\n")[1].strip().splitlines()
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:2]): line for line in table}
    assert set(rows) == {("paper", "eager"), ("cpu", "eager")}
    ms = float(rows[("cpu", "eager")].split("|")[3])
    assert 0 < ms < 60_000, rows  # a number, not the NaN of a failing backend


def test_the_graph_step_benchmark_refuses_cuda_without_a_gpu():
    from benchmarks import graph_step

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit, match="no CUDA device"):
        graph_step.main([])
