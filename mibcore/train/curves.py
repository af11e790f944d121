"""Training curves: train loss and the dev metric per epoch, the best dev epoch marked, for one
run (the curves.png each training writes) or several on one figure (`mibcore plot`).

matplotlib is imported lazily and draws with its Agg canvas (no display needed): training does
not depend on it, and without it a run writes no curves.png (and says so).
"""
import json
import os

from mibcore._io import atomic_write
from mibcore._optional import available, require
from mibcore.errors import DataError, UsageError
from mibcore.train.evaluation import best_epoch, dev_metric
from mibcore.train.run_folder import CURVES, HISTORY

FIGSIZE, DPI = (10, 4), 100  # a 1000 x 400 PNG


def read_history(run):
    """The history of a run folder (or of a history.json path); UsageError / DataError naming it."""
    path = os.path.join(run, HISTORY) if os.path.isdir(run) else run
    if not os.path.isfile(path):
        raise UsageError(f"plot: {run!r} is not a run folder with a history.json (train writes it at its end)")
    try:
        with open(path) as f:
            history = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the history ({e})") from e
    if not (isinstance(history, list) and history
            and all(isinstance(h, dict) and {"epoch", "train_loss", "dev"} <= set(h) for h in history)):
        raise DataError(f"{path}: not a mibcore history (a non-empty list of epoch, train_loss, dev)")
    return history


def plot(runs, path):
    """Draws runs ([(label, history), ...]) on one figure and writes it to path as a PNG, atomically."""
    require("matplotlib", "plotting")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)  # Agg for this figure only: no pyplot, no display, the process's backend untouched
    loss_ax, dev_ax = fig.subplots(1, 2)
    labels = set()
    for label, history in runs:
        epochs = [h["epoch"] for h in history]
        key, metric_label = dev_metric(history[0]["dev"])
        labels.add(metric_label)
        line, = loss_ax.plot(epochs, [h["train_loss"] for h in history], marker=".", label=label)
        dev_ax.plot(epochs, [h["dev"][key] for h in history], marker=".", color=line.get_color(), label=label)
        best = best_epoch(history)
        if best is not None:
            value = next(h["dev"][key] for h in history if h["epoch"] == best)
            dev_ax.plot([best], [value], marker="*", markersize=14, color=line.get_color(), linestyle="none")
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="train loss")
    dev_ax.set(xlabel="epoch", ylabel=" / ".join(sorted(labels)), title="dev (* best epoch)")
    for ax in (loss_ax, dev_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))  # (format: tmp ends in .part)


def write_run_curves(folder, history):
    """A run's curves.png; returns its path, or None where matplotlib is not installed."""
    if not available("matplotlib"):
        return None
    path = os.path.join(folder, CURVES)
    plot([(os.path.basename(os.path.normpath(folder)), history)], path)
    return path
