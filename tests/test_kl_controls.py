"""KL controls (issue 22, item 5): the beta schedule (constant, linear warm-up, cyclical) and the
KL reduction (mean, batchmean, sum), from the schedule's values to CLI runs and their resume."""
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from mibcore import models
from mibcore.__main__ import main as cli
from mibcore.errors import CheckpointError, UsageError
from mibcore.train import TrainConfig, train
from mibcore.train.beta_schedule import BetaSchedule
from mibcore.train.config import load_config
from mibcore.tune.space import parse_space

BETA = 1e-3
# 64 training samples in batches of 16: 4 steps per epoch.
TINY = dict(d=10, hidden=16, synthetic_samples=64, seq_len=4, batch_size=16, progress=False)
STEPS = 4


# --- The schedule's values (exact: fractions of beta derived by hand from the definitions).

def test_constant_is_beta_at_every_step():
    schedule = BetaSchedule("constant", BETA)
    assert {schedule.at(e, s, 7) for e in range(5) for s in range(7)} == {BETA}
    assert schedule.weight_tensor("cpu") is None  # (the loss keeps multiplying by the float)


def test_linear_warm_up_rises_from_0_to_beta_then_holds():
    schedule = BetaSchedule("linear", BETA, warmup=2)
    # progress t = epoch + step / 4 epochs; beta * t / 2 until t = 2
    assert schedule.at(0, 0, STEPS) == 0.0  # the first step
    assert schedule.at(0, 2, STEPS) == BETA * 0.25  # t = 0.5
    assert schedule.at(1, 0, STEPS) == BETA * 0.5  # t = 1
    assert schedule.at(1, 3, STEPS) == BETA * 0.875  # t = 1.75
    assert schedule.at(2, 0, STEPS) == BETA  # the warm-up's end
    assert schedule.at(9, 3, STEPS) == BETA
    assert BetaSchedule("linear", BETA, warmup=0).at(0, 0, STEPS) == BETA  # no warm-up
    assert BetaSchedule("linear", BETA, warmup=0.5).at(0, 2, STEPS) == BETA  # a fraction of an epoch


def test_cyclical_restarts_at_each_cycle_boundary():
    schedule = BetaSchedule("cyclical", BETA, cycle=1.5, ratio=0.5)  # ramps over 0.75 epochs of each 1.5
    assert schedule.at(0, 0, 6) == 0.0  # t = 0: the first cycle starts
    assert schedule.at(0, 3, 6) == pytest.approx(BETA * 2 / 3, rel=1e-15)  # t = 0.5
    assert schedule.at(0, 5, 6) == BETA  # t = 5/6: past the ramp
    assert schedule.at(1, 3, 6) == 0.0  # t = 1.5: the second cycle starts
    assert schedule.at(1, 4, 6) == pytest.approx(BETA * 2 / 9, rel=1e-15)  # t = 1 + 4/6: 1/6 into the cycle
    assert schedule.at(2, 5, 6) == BETA  # t = 2 + 5/6, the end of the second cycle
    assert schedule.at(3, 0, 6) == 0.0  # t = 3: the third cycle starts
    # boundaries of decimal lengths are exact: t = 0.3 and 0.6 begin cycles of 0.3 epochs
    tenth = BetaSchedule("cyclical", BETA, cycle=0.3, ratio=1)
    assert tenth.at(0, 3, 10) == tenth.at(0, 6, 10) == 0.0
    assert tenth.at(0, 2, 10) == pytest.approx(BETA * 2 / 3, rel=1e-15)  # ratio 1: the whole cycle ramps


# --- Validation: each error names its argument.

@pytest.mark.parametrize("field, value, message", [
    ("beta", -1e-3, "beta must be a finite number >= 0"),
    ("beta_schedule", "cosine", "beta_schedule must be one of constant, linear, cyclical, got 'cosine'"),
    ("beta_warmup", -1.0, "beta_warmup must be a finite number >= 0, got -1.0"),
    ("beta_warmup", float("inf"), "beta_warmup must be a finite number >= 0"),
    ("beta_cycle", 0.0, "beta_cycle must be a finite number > 0, got 0.0"),
    ("beta_cycle", -2.0, "beta_cycle must be a finite number > 0"),
    ("beta_ratio", 0.0, r"beta_ratio must be a finite number in \(0, 1\], got 0.0"),
    ("beta_ratio", 1.5, r"beta_ratio must be a finite number in \(0, 1\]"),
    ("kl_reduction", "none", "kl_reduction must be one of mean, batchmean, sum, got 'none'"),
])
def test_bad_values_are_refused_naming_the_field(field, value, message):
    with pytest.raises(UsageError, match=message):
        TrainConfig(**{field: value}).validate()


def test_the_cli_refuses_bad_kl_options_with_exit_2(tmp_path, capsys):
    for flags, message in ((["--beta-warmup", "-1"], "beta_warmup must be a finite number >= 0"),
                           (["--beta-schedule", "cosine"], "argument --beta-schedule: invalid choice: 'cosine'"),
                           (["--kl-reduction", "none"], "argument --kl-reduction: invalid choice: 'none'")):
        assert cli(["train", *flags, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err


def test_the_model_refuses_a_reduction_that_is_no_loss_term():
    with pytest.raises(ValueError, match="MIBConfig: `kl_reduction` must be one of 'mean', 'batchmean', 'sum'"):
        models.build("cmib", kl_reduction="none")  # (a per-sample vector: not a scalar loss term)


# --- The reductions: their relation on one model, in float64.

def small(**kwargs):
    torch.manual_seed(0)
    return models.build("cmib", text_dim=12, audio_dim=5, visual_dim=4, d=10, hidden=16, **kwargs).double().eval()


def batch(n=6, t=7):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(n, t, w, generator=g, dtype=torch.float64) for w in (12, 5, 4)], \
        torch.randn(n, generator=g, dtype=torch.float64)


def test_reductions_scale_the_kl_terms_by_d_and_by_the_batch():
    (text, audio, visual), label = batch()
    outs = {r: small(kl_reduction=r)(text, audio, visual) for r in models.KL_REDUCTIONS}
    n, d = len(label), 10
    assert len(outs["mean"]["kl"]) == 4  # three unimodal bottlenecks and the fused one
    for mean, batchmean, total in zip(outs["mean"]["kl"], outs["batchmean"]["kl"], outs["sum"]["kl"]):
        assert mean.dtype == torch.float64 and mean > 0
        torch.testing.assert_close(batchmean, d * mean, rtol=1e-13, atol=0)
        torch.testing.assert_close(total, n * d * mean, rtol=1e-13, atol=0)


def test_beta_over_d_under_batchmean_gives_the_mean_gradient():
    (text, audio, visual), label = batch()

    def loss_and_grads(reduction, beta):
        model = small(kl_reduction=reduction, beta=beta)
        loss = model.loss(model(text, audio, visual), label)
        return loss, torch.autograd.grad(loss, list(model.parameters()))

    mean_loss, mean_grads = loss_and_grads("mean", 1e-1)
    loss, grads = loss_and_grads("batchmean", 1e-1 / 10)
    torch.testing.assert_close(loss, mean_loss, rtol=1e-13, atol=0)
    for a, b in zip(grads, mean_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-15)


def test_the_default_loss_is_the_papers_formula_bit_for_bit():
    # Today's loss, written out: each prediction's L1, then + beta * the mean-reduced KL of each
    # bottleneck, in this order, with the config's float beta.
    torch.manual_seed(0)
    model = models.build("cmib", text_dim=12, audio_dim=5, visual_dim=4, d=10, hidden=16).train()
    assert model.config.kl_reduction == "mean" and model.config.beta == 1e-3
    (text, audio, visual), label = batch()
    out = model(text.float(), audio.float(), visual.float())
    label = label.float()
    expected = F.l1_loss(out["pred"].reshape(-1), label)
    for pred in out["unimodal_pred"].values():
        expected = expected + F.l1_loss(pred.reshape(-1), label)
    for kl in out["kl"]:
        expected = expected + 1e-3 * kl
    assert torch.equal(model.loss(out, label), expected)
    # a schedule's tensor holding beta computes the same float32 numbers
    assert torch.equal(model.loss(out, label, beta=torch.tensor(1e-3)), expected)


# --- Training: each schedule through the CLI, resume, the default run.

def cli_args(out, *flags, epochs=3):
    return ["train", "--model", "cmib", "--epochs", str(epochs), "--d", "10", "--hidden", "16",
            "--synthetic-samples", "64", "--seq-len", "4", "--batch-size", "16", "--no-progress",
            "--out", str(out), *flags]


@pytest.mark.parametrize("flags, fractions", [
    ([], [1, 1, 1]),
    # the last step of epoch e is at t = e - 1/4: 0.75 / 2, 1.75 / 2, then past the warm-up
    (["--beta-schedule", "linear", "--beta-warmup", "2", "--kl-reduction", "batchmean"], [0.375, 0.875, 1]),
    # cycles of 1.25 epochs ramping over 0.625: t = 0.75, 1.75 (0.5 into the 2nd), 2.75 (0.25 into the 3rd)
    (["--beta-schedule", "cyclical", "--beta-cycle", "1.25", "--beta-ratio", "0.5", "--kl-reduction", "sum"],
     [1, 0.8, 0.4]),
], ids=["constant", "linear", "cyclical"])
def test_each_schedule_trains_through_the_cli_and_records_beta(tmp_path, capsys, flags, fractions):
    assert cli(cli_args(tmp_path / "run", *flags)) == 0
    history = json.load(open(tmp_path / "run" / "history.json"))
    assert [h["beta"] for h in history] == pytest.approx([BETA * f for f in fractions], rel=1e-12)
    lines = capsys.readouterr().err.splitlines()
    scheduled = [line for line in lines if line.startswith("epoch ") and "  beta " in line]
    assert len(scheduled) == (3 if flags else 0), lines  # (the epoch line shows a scheduled beta)


def test_a_resumed_run_continues_the_schedule(tmp_path):
    base = TrainConfig(model="cmib", beta_schedule="cyclical", beta_cycle=0.75, beta=0.5, epochs=2,
                       out=str(tmp_path / "full"), **TINY)
    train(base)
    part = dataclasses.replace(base, out=str(tmp_path / "part"), epochs=1)
    train(part)  # interrupted in the middle of the second cycle (t = 1 of 0.75 .. 1.5) ...
    train(dataclasses.replace(part, epochs=2))  # ... and resumed
    full, resumed = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=True) for name in ("full", "part"))
    assert all(torch.equal(full["model"][k], resumed["model"][k]) for k in full["model"])
    assert [h["beta"] for h in resumed["state"]["history"]] == [h["beta"] for h in full["state"]["history"]]
    with pytest.raises(CheckpointError, match="beta_schedule 'cyclical' -> 'linear'"):
        train(dataclasses.replace(part, epochs=3, beta_schedule="linear"))


def test_a_constant_schedule_through_the_tensor_equals_the_default_run(tmp_path):
    # linear with no warm-up is beta at every step, through the device tensor refilled per step;
    # the default run multiplies by the float: the same weights, bit for bit
    default = TrainConfig(model="cmib", epochs=2, out=str(tmp_path / "a"), **TINY)
    train(default)
    train(dataclasses.replace(default, out=str(tmp_path / "b"), beta_schedule="linear", beta_warmup=0.0))
    a, b = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=True) for name in ("a", "b"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["train_loss"] for h in a["state"]["history"]] == [h["train_loss"] for h in b["state"]["history"]]


# --- Config files and the tune search space name them.

def test_a_yaml_config_sets_them(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "c.yaml"
    path.write_text("beta: 1e-2\nkl_reduction: batchmean\nbeta_schedule: cyclical\nbeta_cycle: 2.5\n"
                    "beta_ratio: 0.25\n")
    config = load_config(str(path))
    assert (config.beta, config.kl_reduction, config.beta_schedule, config.beta_cycle, config.beta_ratio) == \
        (1e-2, "batchmean", "cyclical", 2.5, 0.25)


def test_the_tune_search_space_names_them():
    space = parse_space({"kl_reduction": ["mean", "batchmean"], "beta_schedule": {"choices": ["constant", "linear"]},
                         "beta_warmup": {"low": 0.0, "high": 2.0}, "beta_ratio": {"low": 0.25, "high": 1.0}},
                        TrainConfig(), "s.yaml")
    assert space["kl_reduction"].choices == ("mean", "batchmean") and space["beta_warmup"].kind == "float"
    with pytest.raises(UsageError, match=r"search.kl_reduction: 'none' is not a valid value"):
        parse_space({"kl_reduction": ["mean", "none"]}, TrainConfig(), "s.yaml")
    with pytest.raises(UsageError, match=r"search.beta_cycle: 0.0 is not a valid value \(beta_cycle must be"):
        parse_space({"beta_cycle": {"low": 0.0, "high": 2.0}}, TrainConfig(), "s.yaml")
