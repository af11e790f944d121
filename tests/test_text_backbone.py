"""The optional Hugging Face text backbone, with a tiny BERT written to a temporary folder
(nothing is downloaded)."""
import pickle

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the text backbone is optional")

from mibcore import models  # noqa: E402
from mibcore.data import check_dataset, pickles  # noqa: E402
from mibcore.train import TrainConfig, train  # noqa: E402

WORDS = ["a", "good", "movie", "bad", "not"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    transformers.BertTokenizer(str(vocab)).save_pretrained(str(path))
    config = transformers.BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(str(path))
    return str(path)


def write_mag_bert(path):
    rng = np.random.default_rng(0)
    raw = {}
    for split in ("train", "dev", "test"):
        rows = []
        for k in range(8):
            words = [WORDS[(k + j) % len(WORDS)] for j in range(2 + k % 3)]
            rows.append(((words, rng.standard_normal((len(words), 47)), rng.standard_normal((len(words), 74))),
                         np.array([[float(k % 3) - 1.0]]), f"{split}-{k}"))
        raw[split] = rows
    with open(path, "wb") as f:
        pickle.dump(raw, f)


def test_tokenized_like_the_paper(tiny_bert, tmp_path):
    write_mag_bert(tmp_path / "d.pkl")
    data = check_dataset(pickles.load(str(tmp_path / "d.pkl"), text_backbone=tiny_bert, max_length=8))
    ids = data["train"]["text_ids"]
    assert ids.shape == (8, 8) and ids.dtype == np.int64
    assert (ids[:, 0] == 2).all()  # [CLS] first, then the words, [SEP], right padding with [PAD] = 0
    assert ids[0].tolist()[:4] == [2, 5, 6, 3] and ids[0, 4:].tolist() == [0, 0, 0, 0]


def test_model_with_backbone_trains_end_to_end(tiny_bert, tmp_path):
    model = models.build("cmib", text_backbone=tiny_bert, d=10, hidden=16)
    assert model.proj["text"].conv.in_channels == 16
    with pytest.raises(ValueError, match="token ids"):
        model(torch.randn(2, 4, 16), torch.randn(2, 4, 74), torch.randn(2, 4, 47))
    write_mag_bert(tmp_path / "d.pkl")
    config = TrainConfig(model="cmib", data=str(tmp_path / "d.pkl"), text_backbone=tiny_bert, d=10, hidden=16,
                         epochs=1, batch_size=4, backbone_lr=1e-2, max_text_length=12, out=str(tmp_path / "run"),
                         progress=False)
    before = {k: v.clone() for k, v in models.build("cmib", text_backbone=tiny_bert, d=10, hidden=16)
              .text_backbone.state_dict().items()}
    result, trained = train(config)
    assert np.isfinite(result["test"]["mae"])
    after = trained.text_backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the backbone was fine-tuned


def test_missing_backbone_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        models.build("cmib", text_backbone=str(tmp_path / "nope"))


def test_encoder_mib_around_a_hugging_face_model():
    # MIB around one's own encoders (issue 22, item 4): a Hugging Face model wrapped to [B, d].
    class BertCLS(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, ids):
            return self.bert(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state[:, 0]

    config = transformers.BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    encoders = {"text": BertCLS(transformers.BertModel(config)),
                "audio": torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(5 * 3, 16))}
    model = models.EncoderMIB(encoders, variant="cmib", fusion="tensor", d=16, hidden=32)
    ids = torch.randint(1, 10, (4, 6))
    out = model(text=ids, audio=torch.randn(4, 5, 3))
    model.loss(out, torch.randn(4)).backward()
    grads = [p.grad for p in model.encoders["text"].bert.encoder.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
