"""What a training shows while it runs: a tqdm bar on a terminal, else one line per epoch on
stderr (a log file, a CI job); rank 0 only, and nothing when quiet."""
import sys

from mibcore.train.evaluation import dev_metric


def with_progress(batches, config, epoch, rank):
    """The batches behind a tqdm bar: on rank 0 only, when asked for, and shown on a terminal only."""
    if not (config.progress and rank == 0) or config.quiet:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=not sys.stderr.isatty())


def shows_epoch_lines(config, rank):
    """Whether to log one line per epoch: on rank 0 where no tqdm bar shows (off, or stderr is
    not a terminal), unless quiet."""
    return rank == 0 and not config.quiet and not (config.progress and sys.stderr.isatty())


def _dev_summary(dev):
    """The dev metrics an epoch line shows: the paper's regression metrics, or the emotion means."""
    keys = [k for k in ("mae", "corr", "acc2", "f1") if k in dev] or sorted(k for k in dev if k.startswith("mean_"))
    return " ".join(f"{k} {dev[k]:.4f}" for k in keys)


def epoch_line(config, state, seconds):
    """The log line of state's last epoch: epoch, train loss, beta (where scheduled), dev metrics,
    time, best so far."""
    last, best = state["history"][-1], state["best_epoch"]
    metric, _ = dev_metric(last["dev"])
    best_value = state["history"][best - 1]["dev"][metric] if best else float("nan")
    beta = f"beta {last['beta']:.3g}  " if config.beta_schedule != "constant" else ""
    return (f"epoch {last['epoch']}/{config.epochs}  train loss {last['train_loss']:.4f}  {beta}"
            f"dev {_dev_summary(last['dev'])}  {seconds:.1f} s  best {metric} {best_value:.4f} (epoch {best})")
