"""Missing and noisy modalities: the perturbations `eval --drop/--noise/--robustness` applies to a
split's features before evaluating it.

  drop zero   the modality's features set to 0 (the encoders then see padding: no position
              embedding where a step's first feature is exactly 0)
  drop mean   each feature set to its mean over the training split (all samples and steps)
  noise S     x + S * std * e, e ~ N(0, 1), std the feature's std over the training split; e is
              drawn from numpy's generator seeded by (seed, the modality's position among the
              data's modalities), so every level S of one modality scales the same draws, and
              the same seed gives the same numbers
"""
import math

import numpy as np

from mibcore.data.checks import MODALITY_KEYS, modalities_of
from mibcore.errors import UsageError

DROP_MODES = ("zero", "mean")


def feature_stats(train):
    """{modality: (mean [D], std [D])} over a training split's samples and steps (float64), for
    each of its modalities in their order."""
    out = {}
    for m in modalities_of(train):
        x = np.asarray(train[m], dtype=np.float64).reshape(-1, train[m].shape[2])
        out[m] = (x.mean(axis=0), x.std(axis=0))
    return out


def check_options(drop=(), drop_mode="zero", noise=None, token_text=False, modalities=MODALITY_KEYS):
    """UsageError naming the first bad option: a modality not of `modalities` (the run's), an
    unknown drop mode, a noise level that is not a finite number >= 0, a modality both dropped and
    noised, or text given as token ids (a text backbone's input, which has no features to perturb)."""
    noise = noise or {}
    if drop_mode not in DROP_MODES:
        raise UsageError(f"drop mode must be {' or '.join(DROP_MODES)}, got {drop_mode!r}")
    for what, names in (("--drop", list(drop)), ("--noise", list(noise))):
        for m in names:
            if m not in modalities:
                raise UsageError(f"{what}: unknown modality {m!r}; this run's are {', '.join(modalities)}")
            if m == "text" and token_text:
                raise UsageError(f"{what} text: this run reads text as token ids (a text backbone), which have "
                                 "no features to drop or noise")
    for m, sigma in noise.items():
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (math.isfinite(sigma) and sigma >= 0):
            raise UsageError(f"--noise {m}: the level must be a finite number >= 0 (a multiple of each feature's "
                             f"training std), got {sigma!r}")
    both = sorted(set(drop) & set(noise))
    if both:
        raise UsageError(f"--drop and --noise both name {', '.join(both)}: a modality is either missing or noisy")


def parse_noise(text):
    """MODALITY=SIGMA (the --noise option) -> (modality, sigma); UsageError otherwise."""
    name, sep, value = text.partition("=")
    try:
        sigma = float(value)
    except ValueError:
        sigma = None
    if not sep or sigma is None:
        raise UsageError(f"--noise must be MODALITY=SIGMA (e.g. audio=0.5), got {text!r}")
    return name, sigma


def perturb(split, stats, drop=(), drop_mode="zero", noise=None, seed=0):
    """A copy of `split` (arrays of the modalities it changes are new; the rest shared) with the
    modalities in `drop` missing and those in `noise` ({modality: sigma}) noisy; `stats`:
    feature_stats of the training split. Check the options with check_options first."""
    out = dict(split)
    for m in drop:
        x = split[m]
        fill = 0.0 if drop_mode == "zero" else stats[m][0]
        out[m] = np.broadcast_to(np.asarray(fill, np.float32), x.shape).copy()
    for m, sigma in (noise or {}).items():
        x = np.asarray(split[m], dtype=np.float32)
        rng = np.random.default_rng([seed % 2**32, list(stats).index(m)])
        e = rng.standard_normal(x.shape, dtype=np.float32)
        out[m] = x + np.float32(sigma) * stats[m][1].astype(np.float32) * e
    return out
