"""An embedded synthetic multimodal dataset with a planted, learnable signal (the default data).

Each sample has a latent vector per modality; every time step of a modality is a fixed random
projection of its latent plus noise. The regression label mixes unimodal terms and a bimodal
interaction, squashed to [-3, 3] like CMU-MOSI's sentiment scale; the emotion variant labels
6 classes from signs of latent combinations. Deterministic in `seed`.
"""
import numpy as np


def make_synthetic(
    n_train=512, n_dev=128, n_test=128, seq_len=20, text_dim=768, audio_dim=74, visual_dim=47,
    latent=4, noise=0.5, task="regression", n_classes=6, seed=0,
):
    if task not in ("regression", "emotion"):
        raise ValueError(f"task must be 'regression' or 'emotion', got {task!r}")
    for name, value in (("n_train", n_train), ("n_dev", n_dev), ("n_test", n_test), ("seq_len", seq_len)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    rng = np.random.default_rng(seed)
    dims = {"text": text_dim, "audio": audio_dim, "visual": visual_dim}
    projections = {m: rng.standard_normal((latent, d)) / np.sqrt(latent) for m, d in dims.items()}
    head = rng.standard_normal((3, latent))
    emotion_heads = rng.standard_normal((n_classes, 3 * latent))
    splits = {}
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        z = {m: rng.standard_normal((n, latent)) for m in dims}
        data = {}
        for m, d in dims.items():
            steps = z[m][:, None, :] @ projections[m][None]  # [n, 1, d]
            data[m] = (steps + noise * rng.standard_normal((n, seq_len, d))).astype(np.float32)
        if task == "regression":
            score = (
                z["text"] @ head[0] + 0.5 * (z["audio"] @ head[1]) + 0.5 * (z["visual"] @ head[2])
                + 0.5 * (z["text"] @ head[1]) * (z["audio"] @ head[2])
            )
            label = 3.0 * np.tanh(score / 2.0)
        else:
            logits = np.concatenate([z["text"], z["audio"], z["visual"]], axis=1) @ emotion_heads.T
            label = (logits > 0).astype(np.float32)
        data["label"] = label.astype(np.float32)
        data["id"] = [f"{split}-{i}" for i in range(n)]
        splits[split] = data
    return splits
