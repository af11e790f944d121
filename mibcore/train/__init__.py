"""Training and evaluation of the MIB models (engine, metrics, results over seeds)."""
from mibcore.train.engine import TrainConfig, evaluate_checkpoint, train, train_seeds
from mibcore.train.metrics import emotion_metrics, regression_metrics

__all__ = ["TrainConfig", "emotion_metrics", "evaluate_checkpoint", "regression_metrics", "train", "train_seeds"]
