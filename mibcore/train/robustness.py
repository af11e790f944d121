"""The robustness table of a run (`eval --robustness`): its metrics on a split with each modality
missing and each noisy at a few levels (mibcore.train.perturb), written to the run folder:
metrics.json's "robustness" section and results.md."""
import json
import os

from mibcore._io import atomic_write_text
from mibcore.train.best_model import best_path
from mibcore.train.evaluation import evaluate, load_run, train_label_mean
from mibcore.train.perturb import check_options, feature_stats, perturb
from mibcore.train.run_folder import METRICS, lock_run_folder, write_json

LEVELS = (0.5, 1.0, 2.0)  # noise levels, in training stds of each feature
RESULTS = "results.md"
# The columns of the table (every metric is in metrics.json): the paper's, by task.
COLUMNS = {"regression": ("mae", "corr", "acc2", "f1", "acc7"), "emotion": ("mean_acc", "mean_f1")}


def conditions(modalities, levels):
    """[(name, drop, noise)]: clean, each modality missing, each noisy at each level."""
    rows = [("clean", (), {})]
    rows += [(f"drop {m}", (m,), {}) for m in modalities]
    rows += [(f"noise {m} {sigma:g}", (), {m: sigma}) for m in modalities for sigma in levels]
    return rows


def evaluate_robustness(path, data_spec=None, split="test", device=None, levels=LEVELS, drop_mode="zero",
                        seed=None, write=True):
    """The robustness section of a run folder (or its best.pt) on a split: {"data", "split",
    "drop_mode", "levels", "seed", "conditions": {name: metrics}} (names as conditions()
    gives them). `seed`: the noise's (default: the run's seed). `write`: also store it in the
    run folder (metrics.json's "robustness", results.md), under the run folder's lock."""
    config, model, device, data = load_run(path, data_spec, device)
    token_text = bool(config.text_backbone)
    modalities = [m for m in model.modalities if not (m == "text" and token_text)]
    levels = list(levels)
    check_options((), drop_mode, {m: sigma for m in modalities[:1] for sigma in levels}, token_text, modalities)
    seed = config.seed if seed is None else seed
    stats, label_mean = feature_stats(data["train"]), train_label_mean(data)
    rows = {}
    for name, drop, noise in conditions(modalities, levels):
        check_options(drop, drop_mode, noise, token_text, modalities)
        part = perturb(data[split], stats, drop, drop_mode, noise, seed) if drop or noise else data[split]
        rows[name] = evaluate(model, part, device, config, label_mean)
    section = {"data": config.data, "split": split, "drop_mode": drop_mode, "levels": levels, "seed": seed,
               "conditions": rows}
    if write:
        write_robustness(os.path.dirname(os.path.abspath(best_path(path))), section)
    return section


def markdown(section):
    """The section as a Markdown table (a line saying what it measured, then one row per condition)."""
    rows = section["conditions"]
    columns = COLUMNS["regression" if "mae" in rows["clean"] else "emotion"]
    lines = [f"Robustness on the {section['split']} split of {section['data']}: a missing modality's features "
             f"set to {'0' if section['drop_mode'] == 'zero' else 'their training mean'}; noise: sigma x each "
             f"feature's training std, seed {section['seed']}.", "",
             "| condition | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    lines += [f"| {name} | " + " | ".join(f"{metrics[c]:.4f}" for c in columns) + " |" for name, metrics in rows.items()]
    return "\n".join(lines) + "\n"


def write_robustness(folder, section):
    """Adds the section to folder/metrics.json (its other keys kept) and writes folder/results.md,
    each atomically, under the run folder's lock (RunLockedError while a training holds it)."""
    with lock_run_folder(folder):
        metrics = {}
        try:
            with open(os.path.join(folder, METRICS)) as f:
                metrics = json.load(f)
        except (OSError, ValueError):
            pass  # (none yet: a best.pt on its own)
        metrics = metrics if isinstance(metrics, dict) else {}
        write_json(folder, METRICS, {**metrics, "robustness": section})
        atomic_write_text(os.path.join(folder, RESULTS), "# Robustness\n\n" + markdown(section))
