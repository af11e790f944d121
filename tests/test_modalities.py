"""MIB around any encoders and any number of modalities (issue 22, item 4): models.build's
`modalities`, EncoderMIB (one's own encoders), and npz data of any modalities through the CLI
(train, eval, predict), with the paper's three-modality model unchanged."""
import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from mibcore import models
from mibcore.__main__ import main as cli
from mibcore.nn import FUSIONS
from mibcore.train.checkpoint import read_checkpoint
from tests.test_cli import error_of

SMALL = dict(d=10, hidden=16)
PAPER = {"text": 12, "audio": 5, "visual": 4}


def count(model):
    return sum(p.numel() for p in model.parameters())


def inputs(widths, n=3, t=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, t, w, generator=g) for m, w in widths.items()}


# --- the paper's three modalities stay as they are ---

def test_the_paper_triple_by_name_is_the_default_model():
    torch.manual_seed(0)
    default = models.build("cmib", fusion="tensor", text_dim=12, audio_dim=5, visual_dim=4, **SMALL)
    torch.manual_seed(0)
    named = models.build("cmib", fusion="tensor", modalities=PAPER, **SMALL)
    assert default.modalities == named.modalities == ("text", "audio", "visual")
    a, b = default.state_dict(), named.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = inputs(PAPER)
    torch.manual_seed(1)
    out_a = default(*x.values())
    torch.manual_seed(1)
    out_b = named(**x)  # (by name: the same as positional)
    assert torch.equal(out_a["pred"], out_b["pred"])
    assert default.fusion_order == ("audio", "visual", "text")  # the paper's TFN order


def test_the_paper_models_keep_their_parameter_names_and_counts():
    from tests.test_models import PAPER_COUNTS

    for variant, n in PAPER_COUNTS.items():
        assert count(models.build(variant, modalities={"text": 768, "audio": 74, "visual": 47})) == n
    state = models.build("cmib").state_dict()
    assert {".".join(k.split(".")[:2]) for k in state} == {
        "proj.text", "proj.audio", "proj.visual", "encoders.audio", "encoders.visual", "unimodal_ib.text",
        "unimodal_ib.audio", "unimodal_ib.visual", "unimodal_dec.text", "unimodal_dec.audio", "unimodal_dec.visual",
        "fusion.linear", "fused_ib.encoder", "fused_ib.heads", "decoder.weight", "decoder.bias"}
    # The number of state_dict entries, counted on the models before the N-modality machinery.
    entries = {"plain": 83, "emib": 87, "lmib": 101, "cmib": 105}
    for variant, n in entries.items():
        assert len(models.build(variant, d=10, hidden=16).state_dict()) == n
        assert len(models.build(variant, fusion="tensor", d=10, hidden=16).state_dict()) == n + 4


# --- models.build(modalities=...) with the built-in encoders ---

@pytest.mark.parametrize("n", range(2, models.MAX_MODALITIES + 1))
def test_two_to_six_modalities_train_a_step(n):
    widths = {"text": 6, **{f"m{i}": 2 + i for i in range(1, n)}}
    torch.manual_seed(0)
    model = models.build("cmib", modalities=widths, **SMALL)
    assert model.modalities == tuple(widths)
    assert set(model.proj) == set(widths) and set(model.encoders) == set(widths) - {"text"}  # the rule
    out = model(**inputs(widths))
    assert out["pred"].shape == (3, 1) and len(out["kl"]) == n + 1
    model.loss(out, torch.randn(3)).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_a_non_text_modality_adds_its_projection_encoder_bottleneck_and_decoder():
    base = models.build("cmib", modalities={"text": 6, "audio": 3}, **SMALL)
    more = models.build("cmib", modalities={"text": 6, "audio": 3, "eeg": 7}, **SMALL)
    d = SMALL["d"]
    encoder = count(base.encoders["audio"])
    bottleneck, decoder = count(base.unimodal_ib["audio"]), count(base.unimodal_dec["audio"])
    concat = d * d  # (concat's Linear(n d, d) takes d more inputs)
    assert count(more) - count(base) == 7 * d * 3 + encoder + bottleneck + decoder + concat


@pytest.mark.parametrize("fusion", list(FUSIONS))
@pytest.mark.parametrize("n", [2, 4])
def test_every_fusion_fuses_the_modalities_it_supports(fusion, n):
    widths = dict(list({"text": 6, "audio": 3, "visual": 4, "eeg": 2}.items())[:n])
    if fusion in ("tensor", "low-rank", "graph") and n > 3:
        with pytest.raises(ValueError, match=f"fusion '{fusion}' fuses 2 or 3 modalities, got 4; concat, "):
            models.build("lmib", fusion=fusion, modalities=widths, **SMALL)
        return
    model = models.build("lmib", fusion=fusion, modalities=widths, **SMALL)
    out = model(**inputs(widths))
    model.loss(out, torch.randn(3)).backward()
    assert torch.isfinite(out["pred"]).all()
    if fusion == "tensor":
        assert model.fusion_order == ("audio", "text")  # text last, as the paper's TFN


@pytest.mark.parametrize("options, error, match", [
    ({"modalities": {}}, ValueError, r"`modalities` must name 2 to 6 modalities, got 0"),
    ({"modalities": {"audio": 3}}, ValueError, r"`modalities` must name 2 to 6 modalities, got 1"),
    ({"modalities": {f"m{i}": 2 for i in range(7)}}, ValueError, r"must name 2 to 6 modalities, got 7"),
    ({"modalities": {"audio": 3, "eeg": 0}}, ValueError, r"`modalities\['eeg'\]` must be a positive int, got 0"),
    ({"modalities": {"audio": 3, "eeg": -2}}, ValueError, r"`modalities\['eeg'\]` must be a positive int"),
    ({"modalities": {"audio": 3, "eeg": 2.5}}, ValueError, r"`modalities\['eeg'\]` must be a positive int"),
    ({"modalities": {"audio": 3, "label": 2}}, ValueError, r"'label' is not a modality name"),
    ({"modalities": {"audio": 3, "eye-gaze": 2}}, ValueError, r"by identifiers .* got 'eye-gaze'"),
    ({"modalities": [("audio", 3), ("eeg", 2)]}, TypeError, r"`modalities` must be a dict"),
    ({"modalities": {"audio": 3, "eeg": 2}, "no_ib": ("text",)}, ValueError,
     r"no_ib names unknown modalities \['text'\]; expected \('audio', 'eeg'\)"),
    ({"modalities": {"audio": 3, "eeg": 2}, "text_dim": 12}, ValueError,
     r"give every width in `modalities`; text_dim apply only without it"),
    ({"modalities": {"audio": 3, "eeg": 2}, "text_backbone": "/nowhere"}, ValueError,
     r"`text_backbone` encodes the text modality, but `modalities` has none"),
])
def test_build_refuses_bad_modalities_naming_the_argument(options, error, match):
    with pytest.raises(error, match=match):
        models.build("cmib", **SMALL, **options)


def test_forward_names_a_missing_or_unknown_input():
    model = models.build("plain", modalities={"audio": 3, "eeg": 2}, **SMALL)
    x = inputs({"audio": 3, "eeg": 2})
    with pytest.raises(TypeError, match=r"missing the input of eeg"):
        model(audio=x["audio"])
    with pytest.raises(TypeError, match=r"input 'gaze' is not one of this model's modalities"):
        model(**x, gaze=x["eeg"])
    with pytest.raises(TypeError, match=r"input 'audio' is given twice"):
        model(x["audio"], audio=x["audio"])
    with pytest.raises(TypeError, match=r"got 3 positional inputs"):
        model(*x.values(), x["eeg"])


# --- EncoderMIB: one's own encoders ---

class MeanPool(nn.Module):
    """A stand-in for a wrapped pretrained model: tokens [B, T] -> embeddings -> mean -> [B, d]."""

    def __init__(self, vocab, d):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)

    def forward(self, ids):
        return self.embed(ids).mean(dim=1)


def user_encoders(d=8):
    return {"text": MeanPool(20, d), "audio": nn.Sequential(nn.Flatten(), nn.Linear(4 * 3, d)),
            "ecg": _LastState(nn.GRU(2, d, batch_first=True))}


class _LastState(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[1][-1]


def user_inputs(n=5):
    g = torch.Generator().manual_seed(0)
    return {"text": torch.randint(0, 20, (n, 6), generator=g), "audio": torch.randn(n, 4, 3, generator=g),
            "ecg": torch.randn(n, 9, 2, generator=g)}


@pytest.mark.parametrize("variant", models.VARIANTS)
def test_encoder_mib_trains_the_users_encoders(variant):
    torch.manual_seed(0)
    model = models.EncoderMIB(user_encoders(), variant=variant, d=8, hidden=16, fusion="concat")
    assert model.modalities == ("text", "audio", "ecg")
    out = model(**user_inputs())
    assert out["pred"].shape == (5, 1)
    assert len(out["kl"]) == {"plain": 0, "emib": 1, "lmib": 3, "cmib": 4}[variant]
    assert set(out["unimodal_pred"]) == (set() if variant in ("plain", "emib") else {"text", "audio", "ecg"})
    model.loss(out, torch.randn(5)).backward()
    for m, encoder in model.encoders.items():  # the gradients reach every user encoder
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters()), m
    assert {k.split(".")[0] for k in model.state_dict()} >= {"encoders", "decoder"}


def test_encoder_mib_with_tensor_fusion_and_emotion_labels():
    torch.manual_seed(0)
    encoders = user_encoders()
    del encoders["ecg"]
    model = models.EncoderMIB(encoders, variant="cmib", d=8, hidden=16, fusion="tensor", output_dim=4)
    x = user_inputs()
    out = model(x["text"], x["audio"])  # positional: in the order of the encoders
    assert out["pred"].shape == (5, 4) and model.fusion_order == ("audio", "text")
    assert torch.isfinite(model.loss(out, (torch.rand(5, 4) > 0.5).float()))


@pytest.mark.parametrize("call, error, match", [
    (lambda: models.EncoderMIB([nn.Linear(2, 8)], d=8), TypeError, r"`encoders` must be a dict"),
    (lambda: models.EncoderMIB({"audio": nn.Linear(2, 8)}, d=8), ValueError, r"`encoders` must name at least 2"),
    (lambda: models.EncoderMIB({"audio": nn.Linear(2, 8), "eeg": lambda x: x}, d=8), TypeError,
     r"`encoders\['eeg'\]` must be an nn.Module, got function"),
    (lambda: models.EncoderMIB(user_encoders(), d=8, heads=2), TypeError,
     r"options \['heads'\] configure the built-in encoders"),
    (lambda: models.EncoderMIB(user_encoders(), d=8, hiden=2), TypeError, r"unknown options \['hiden'\]"),
    (lambda: models.EncoderMIB(user_encoders(), d=8, fusion="graph", variant="lmib", no_ib=("video",)), ValueError,
     r"no_ib names unknown modalities \['video'\]"),
    (lambda: models.EncoderMIB({**user_encoders(), "a": nn.Linear(1, 8), "b": nn.Linear(1, 8)}, d=8,
                               fusion="tensor"), ValueError, r"fusion 'tensor' fuses 2 or 3 modalities, got 5"),
])
def test_encoder_mib_refuses_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_encoder_mib_names_an_encoder_of_the_wrong_width():
    model = models.EncoderMIB(user_encoders(d=8), d=6, hidden=16)
    with pytest.raises(ValueError, match=r"encoders\['text'\] must map its input to \[B, d=6\], got \[5, 8\]"):
        model(**user_inputs())


# --- npz data of any modalities, through the CLI ---

def modalities_npz(path, widths, n=(48, 16, 16), seed=0):
    """A dataset .npz of the modalities `widths` ({name: D}; [N, T, D], or [N, D] for D odd)
    whose regression label is planted in every modality."""
    rng = np.random.default_rng(seed)
    directions = {m: rng.standard_normal(w) for m, w in widths.items()}
    arrays = {}
    for split, size in zip(("train", "dev", "test"), n):
        label = rng.uniform(-2.5, 2.5, size)
        for m, w in widths.items():
            x = label[:, None] * directions[m] / len(widths) + 0.3 * rng.standard_normal((size, w))
            arrays[f"{split}_{m}"] = (x if w % 2 else np.repeat(x[:, None], 3, axis=1)).astype(np.float32)
        arrays[f"{split}_label"] = label.astype(np.float32)
    np.savez(path, **arrays)
    return arrays


def cli_out(capsys, argv):
    capsys.readouterr()
    assert cli(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


TRAIN = ["--d", "10", "--hidden", "16", "--epochs", "2", "--batch-size", "16", "--quiet"]


@pytest.mark.parametrize("widths", [{"eeg": 4, "audio": 3}, {"visual": 5, "text": 6, "gaze": 2, "audio": 3}])
def test_npz_of_any_modalities_trains_evaluates_and_predicts(tmp_path, capsys, widths):
    data = str(tmp_path / "mods.npz")
    arrays = modalities_npz(data, widths)
    run = str(tmp_path / "run")
    test = json.loads(cli_out(capsys, ["train", "--data", data, "--out", run, *TRAIN]))
    order = [m for m in ("text", "audio", "visual") if m in widths] + sorted(set(widths) - {"text", "audio", "visual"})
    best = read_checkpoint(f"{run}/best.pt")  # the modalities' names and widths, in the model's order
    assert best["dims"] == {**{m: widths[m] for m in order}, "label": 1}
    assert [k.split(".")[1] for k in best["model"] if k.endswith(".conv.weight")] == order
    assert json.loads(cli_out(capsys, ["eval", run])) == test  # eval rebuilds the model from best.pt

    samples = str(tmp_path / "samples.npz")  # one's own samples: no split prefix, no labels
    np.savez(samples, **{m: arrays[f"test_{m}"] for m in widths})
    assert "16 predictions, no labels" in cli_out(capsys, ["predict", run, "--data", samples, "--out", "p.csv"])
    with open("p.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "prediction"] and len(rows) == 17
    pred = np.array([float(r[1]) for r in rows[1:]])
    label = arrays["test_label"]
    assert np.mean(np.abs(pred - label)) == pytest.approx(test["mae"], rel=1e-5)  # (no label is 0 here)

    dropped = json.loads(cli_out(capsys, ["eval", run, "--drop", order[-1]]))
    assert dropped["mae"] != test["mae"]
    assert "--drop: unknown modality 'smell'; this run's are " + ", ".join(order) in error_of(
        capsys, ["eval", run, "--drop", "smell"], 2)
    robust = cli_out(capsys, ["eval", run, "--robustness", "--levels", "1"])
    assert [f"drop {m}" in robust for m in order] == [True] * len(order)

    lacking = str(tmp_path / "lacking.npz")
    np.savez(lacking, **{m: arrays[f"test_{m}"] for m in order[:-1]}, extra=arrays[f"test_{order[0]}"])
    assert f"lacking.npz: has no {order[-1]}; the model was trained on the modalities {', '.join(order)}" in \
        error_of(capsys, ["predict", run, "--data", lacking], 3)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_npz_modality_mistakes_are_named(tmp_path, capsys):
    one = str(tmp_path / "one.npz")
    modalities_npz(one, {"audio": 3})
    assert "one.npz: features of 1 modality ['audio']; MIB fuses 2 or more" in error_of(
        capsys, ["train", "--data", one, *TRAIN], 3)
    seven = str(tmp_path / "seven.npz")
    modalities_npz(seven, {f"m{i}": 3 for i in range(7)})
    assert "`modalities` must name 2 to 6 modalities, got 7" in error_of(capsys, ["train", "--data", seven, *TRAIN], 2)
    two = str(tmp_path / "two.npz")
    modalities_npz(two, {"audio": 3, "eeg": 2})
    assert "no_ib names unknown modalities ['text']" in error_of(
        capsys, ["train", "--data", two, "--no-ib", "text", *TRAIN], 2)
    four = str(tmp_path / "four.npz")
    modalities_npz(four, {"audio": 3, "eeg": 2, "gaze": 2, "text": 4})
    assert "fusion 'tensor' fuses 2 or 3 modalities, got 4" in error_of(
        capsys, ["train", "--data", four, "--fusion", "tensor", *TRAIN], 2)
    assert "mibcore's HDF5 layout holds the modalities text, audio, visual" in error_of(
        capsys, ["convert", four, str(tmp_path / "four.h5")], 3)
    arrays = dict(np.load(two))
    del arrays["dev_eeg"]
    np.savez(two, **arrays)
    assert "two.npz: missing dev_eeg" in error_of(capsys, ["train", "--data", two, *TRAIN], 3)
