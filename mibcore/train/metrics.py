"""Evaluation metrics of the MIB paper and of MMSA (regression), and per-class emotion metrics."""
import numpy as np


def _weighted_f1(true, pred):
    """F1 per class, averaged with weights = class support (sklearn's average='weighted')."""
    total, score = len(true), 0.0
    if total == 0:
        return float("nan")
    for c in np.unique(true):
        tp = np.sum((pred == c) & (true == c))
        fp = np.sum((pred == c) & (true != c))
        fn = np.sum((pred != c) & (true == c))
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        score += f1 * np.sum(true == c) / total
    return float(score)


def _corr(a, b):
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def regression_metrics(pred, label, train_label_mean=None):
    """The paper's metrics (Acc-7 over all samples; MAE, Corr, Acc-2, weighted F1 on non-zero
    labels) and MMSA's (Has0/Non0 Acc-2 and F1, Acc-5, Acc-7, MAE and Corr on all)."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    label = np.asarray(label, dtype=np.float64).reshape(-1)
    nz = label != 0
    clip = lambda x, k: np.round(np.clip(x, -k, k))  # noqa: E731
    out = {
        "acc7": float(np.mean(clip(pred, 3) == clip(label, 3))),
        "mae": float(np.mean(np.abs(pred[nz] - label[nz]))) if nz.any() else float("nan"),
        "corr": _corr(pred[nz], label[nz]),
        "acc2": float(np.mean((pred[nz] > 0) == (label[nz] > 0))) if nz.any() else float("nan"),
        "f1": _weighted_f1(label[nz] > 0, pred[nz] > 0),
        # MMSA (utils/metricsTop.py conventions)
        "has0_acc2": float(np.mean((pred >= 0) == (label >= 0))),
        "has0_f1": _weighted_f1(label >= 0, pred >= 0),
        "non0_acc2": float(np.mean((pred[nz] > 0) == (label[nz] > 0))) if nz.any() else float("nan"),
        "non0_f1": _weighted_f1(label[nz] > 0, pred[nz] > 0),
        "acc5": float(np.mean(clip(pred, 2) == clip(label, 2))),
        "mae_all": float(np.mean(np.abs(pred - label))),
        "corr_all": _corr(pred, label),
    }
    if train_label_mean is not None:
        out["baseline_mae"] = float(np.mean(np.abs(train_label_mean - label[nz]))) if nz.any() else float("nan")
    return out


def emotion_metrics(logits, label, class_names=None):
    """Per-class accuracy and (binary) F1 for multi-label emotion, thresholding logits at 0."""
    logits = np.asarray(logits, dtype=np.float64)
    label = np.asarray(label) > 0.5
    pred = logits > 0
    names = class_names or [f"class{c}" for c in range(label.shape[1])]
    out = {}
    for c, name in enumerate(names):
        tp = np.sum(pred[:, c] & label[:, c])
        fp = np.sum(pred[:, c] & ~label[:, c])
        fn = np.sum(~pred[:, c] & label[:, c])
        out[f"{name}_acc"] = float(np.mean(pred[:, c] == label[:, c]))
        out[f"{name}_f1"] = float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0
    out["mean_acc"] = float(np.mean([out[f"{n}_acc"] for n in names]))
    out["mean_f1"] = float(np.mean([out[f"{n}_f1"] for n in names]))
    return out
