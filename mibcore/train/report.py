"""Results over seeds: one run per seed, and the mean +- sample std (n - 1, as papers report it)
of their test metrics."""
import dataclasses
import functools
import os

import numpy as np

from mibcore._io import atomic_write_text
from mibcore.errors import UsageError
from mibcore.train.config import TrainConfig
from mibcore.train.engine import train


def train_seeds(config: TrainConfig, seeds):
    """Trains one run per seed (config.out/seed-S) and writes results.md / results.csv with
    mean +- std of the test metrics over seeds; returns {metric: (mean, std)}."""
    return {k: (m, s) for k, m, s in seed_summary([r["test"] for r in seed_runs(config, seeds)])}


def check_seeds(seeds, config=None):
    """UsageError unless each seed is given once (and, with `config`, is a valid seed of it)."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"seeds: give each seed once (n counts runs), got {list(seeds or [])}")
    for seed in seeds if config is not None else ():  # all of them before the first run
        dataclasses.replace(config, seed=seed).validate()


def seed_runs(config: TrainConfig, seeds, on_epoch=None):
    """train_seeds' runs: returns train()'s summary of each seed. on_epoch(seed, epoch, dev), if
    given, is each run's per-epoch hook (engine.train's on_epoch) with the seed first."""
    check_seeds(seeds, config)
    results = []
    for seed in seeds:
        cfg = dataclasses.replace(config, seed=seed, out=os.path.join(config.out, f"seed-{seed}"))
        hook = None if on_epoch is None else functools.partial(on_epoch, seed)
        results.append(train(cfg, on_epoch=hook)[0])
    runs = [r["test"] for r in results]
    rows = seed_summary(runs)
    md = ["| metric | mean | sample std (n - 1) | n |", "| --- | ---: | ---: | ---: |"]
    md += [f"| {k} | {m:.4f} | {s:.4f} | {len(runs)} |" for k, m, s in rows]
    md += ["", "(The std is the sample standard deviation over seeds, with n - 1 in the denominator;"
               " NaN for one seed.)"]
    csv = ["metric,mean,sample_std,n"] + [f"{k},{m},{s},{len(runs)}" for k, m, s in rows]
    for name, text in (("results.md", "\n".join(md) + "\n"), ("results.csv", "\n".join(csv) + "\n")):
        atomic_write_text(os.path.join(config.out, name), text)
    return results


def seed_summary(runs):
    """[(metric, mean, sample std)] over runs (each a dict of test metrics), metrics sorted by name;
    the std with n - 1 in the denominator (NaN for a single run)."""
    rows = []
    for k in sorted(runs[0]):
        values = np.array([r[k] for r in runs], dtype=np.float64)
        std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        rows.append((k, float(np.mean(values)), std))
    return rows
