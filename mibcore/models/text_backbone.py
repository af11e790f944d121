"""An optional Hugging Face text backbone (e.g. BERT, as the paper), loaded from local files only.

mibcore never downloads weights: `path` must be a local directory holding a transformers
model and its tokenizer (`save_pretrained` output). Without `transformers` installed, or
without such a directory, construction fails with a clear error; the default text input
(precomputed token features) needs neither.
"""
import os

import torch
from torch import nn


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("text_backbone needs the `transformers` package (pip install transformers)") from None
    return transformers


class TextBackbone(nn.Module):
    """token ids [B, T] (0 = padding) -> last hidden states [B, T, hidden]."""

    def __init__(self, path):
        super().__init__()
        if not os.path.isdir(path):
            raise FileNotFoundError(f"text_backbone: {path!r} is not a local model directory (weights are never downloaded)")
        transformers = _transformers()
        self.model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
        self.hidden_size = self.model.config.hidden_size
        self.pad_token_id = self.model.config.pad_token_id or 0

    def forward(self, input_ids):
        mask = (input_ids != self.pad_token_id).long()
        return self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state


def tokenize(path, sentences, max_length):
    """Token ids [N, max_length] (int64) of word lists, as the paper's MAG-BERT pipeline:
    [CLS] words [SEP], truncated and right-padded to max_length."""
    transformers = _transformers()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    batch = tokenizer([" ".join(words) for words in sentences], padding="max_length", truncation=True,
                      max_length=max_length, return_tensors="pt")
    return batch["input_ids"].to(torch.int64).numpy()
