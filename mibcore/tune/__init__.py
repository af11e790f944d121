"""Hyper-parameter search (`mibcore tune`) on Optuna, an optional dependency (mibcore[tune]),
imported only when a search runs.

  space.py   the search space: a config file's `search` section, checked; Optuna's suggestions
  study.py   tune(): the study (SQLite in OUT, or a shared --storage), trials, pruning, resume
  report.py  the outputs: results.md / .csv, importance.csv, tune.png, best.yaml
"""
from mibcore.tune.study import tune

__all__ = ["tune"]
