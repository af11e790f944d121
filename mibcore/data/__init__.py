"""Data: the embedded synthetic dataset, loaders for the public formats, and batching.

A dataset is a dict of splits ("train", "dev", "test"), each a dict of numpy arrays:
text [N, T, Dt], audio [N, T, Da], visual [N, T, Dv], label [N] (regression; [N, 1] is read as
[N]) or [N, C] with values in [0, 1] (multi-label emotion), and id (a list of N strings). Every
loader's result goes through check_dataset (mibcore.data.checks), and every file's declared array
sizes through a memory budget (mibcore.data.budget).
"""
from mibcore.data.dataset import SPLITS, MultimodalDataset, check_dataset, load_dataset
from mibcore.data.synthetic import make_synthetic

__all__ = ["SPLITS", "MultimodalDataset", "check_dataset", "load_dataset", "make_synthetic"]
