"""Data: the embedded synthetic dataset, loaders for the public formats, and batching.

A dataset is a dict of splits ("train", "dev", "test"), each a dict of numpy arrays:
text [N, T, Dt], audio [N, T, Da], visual [N, T, Dv], label [N] (regression) or [N, C]
(multi-label emotion), and id (a list of N strings).
"""
from mibcore.data.dataset import SPLITS, MultimodalDataset, check_dataset, load_dataset
from mibcore.data.synthetic import make_synthetic

__all__ = ["SPLITS", "MultimodalDataset", "check_dataset", "load_dataset", "make_synthetic"]
