"""Training and evaluation of the MIB models.

  config.py      TrainConfig (fields, checks) and config files (JSON / YAML / MMSA sections)
  engine.py      train(): the training loop of one seed
  runtime.py     seeding, DDP process group, device, autocast
  build.py       the dataset and the model a config names
  optimizer.py   fused Adam (a text backbone's own learning rate)
  batching.py    each epoch's shuffled batches (resumable, split across DDP processes)
  beta_schedule.py  the KL weight per step (constant, linear warm-up, cyclical)
  progress.py    the tqdm bar and the per-epoch log lines
  evaluation.py  metrics of a split, evaluate_checkpoint, the dev-score rule of model selection
  best_model.py  the model a best.pt holds (sized by its weights) and the check that data fits it
  prediction.py  predict_file: per-sample predictions on any data file (`mibcore predict`)
  perturb.py     missing and noisy modalities (eval --drop / --noise)
  robustness.py  evaluate_robustness: the table of eval --robustness (metrics.json, results.md)
  checkpoint.py  best.pt / checkpoint.pt: atomic writes, safe reads, exact resume
  run_folder.py  the run folder's file names and lock
  report.py      train_seeds: runs over seeds, mean +- std
  metrics.py     the paper's and MMSA's metrics     curves.py  training curves (curves.png, `mibcore plot`)
"""
from mibcore.train.config import TrainConfig
from mibcore.train.engine import train
from mibcore.train.evaluation import evaluate_checkpoint
from mibcore.train.metrics import emotion_metrics, regression_metrics
from mibcore.train.prediction import predict_file
from mibcore.train.report import train_seeds
from mibcore.train.robustness import evaluate_robustness

__all__ = ["TrainConfig", "emotion_metrics", "evaluate_checkpoint", "evaluate_robustness", "predict_file",
           "regression_metrics", "train", "train_seeds"]
