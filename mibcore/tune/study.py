"""`mibcore tune`: a hyper-parameter search on Optuna over a config's search space
(mibcore.tune.space). Each trial is a normal run (OUT/trial-K, or OUT/trial-K/seed-S with
--seeds); its objective is the rule that selects a run's best epoch (evaluation.dev_score: dev
MAE, or 1 - dev mean F1; minimized) at that best epoch, the mean over seeds.

The study lives in a database: OUT/study.db (SQLite) by default, or --storage URL, which several
processes or machines share (Optuna's distributed mode: each worker asks the database for its
next trial). --trials counts the study's finished (complete or pruned) trials, so a rerun, or
another worker, runs only those still missing (workers running at once may overshoot by about a
trial each). A rerun continues the study and keeps its finished trials. A trial whose process
was killed stays RUNNING in the database: a rerun on the same machine finds that process gone
and marks the trial failed; on other machines Optuna's heartbeat does once the trial has been
silent for HEARTBEAT_GRACE seconds. Either way its parameters are queued again (MAX_RETRY times
at most), as a new trial in a new folder (the killed one's folder stays as the kill left it).

Pruning: after each epoch of a trial's first seed, its dev score goes to Optuna's MedianPruner,
which stops the trial when it is worse than the median of the earlier trials at that epoch
(once PRUNER_STARTUP trials are complete).
"""
import contextlib
import dataclasses
import json
import math
import os
import socket
import sys
import warnings

import numpy as np

from mibcore._optional import require
from mibcore.errors import DivergedError, UsageError
from mibcore.train.config import SEARCH, config_from_file, read_config_file
from mibcore.train.engine import train
from mibcore.train.evaluation import dev_metric, dev_score
from mibcore.train.report import check_seeds, seed_runs
from mibcore.tune import report, space as spaces

SAMPLERS = ("tpe", "random", "grid")
STUDY_DB = "study.db"
HEARTBEAT_INTERVAL, HEARTBEAT_GRACE = 60, 180  # seconds
MAX_RETRY = 2
PRUNER_STARTUP = 5
SETUP = "mibcore_setup"  # the study's user attribute: what its trials search (checked on every rerun)
# Fields that may differ between the workers of one study (where and how they run, not what).
NOT_COMPARED = ("out", "device", "progress", "quiet", "resume", "compile")


def tune(config_path, trials, out="runs/tune", sampler="tpe", seeds=None, storage=None, study_name="mibcore",
         timeout=None, prune=True, sampler_seed=None):
    """Runs (or continues) the study; writes its outputs to `out` (mibcore.tune.report) and
    returns their summary."""
    optuna = require("optuna", "mibcore tune")
    _check_options(trials, timeout, seeds, sampler)
    raw = read_config_file(config_path)
    search = raw.pop(SEARCH, None)
    base = config_from_file(raw, config_path)
    space = spaces.parse_space(search, base, config_path)
    grid = spaces.grid(space, config_path) if sampler == "grid" else None
    if grid is not None:
        trials = min(trials, math.prod(len(v) for v in grid.values()))  # the grid sampler stops there
    os.makedirs(out, exist_ok=True)
    url = storage or "sqlite:///" + os.path.abspath(os.path.join(out, STUDY_DB))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its per-trial logs: ours instead, without tracebacks
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # (the heartbeat's)
            db = _storage(optuna, url, storage is not None)
            study = optuna.create_study(storage=db, study_name=study_name, direction="minimize", load_if_exists=True,
                                        sampler=_sampler(optuna, sampler, grid, sampler_seed),
                                        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP)
                                        if prune else optuna.pruners.NopPruner())
            _check_setup(study, _setup(base, space, seeds), study_name)
            _fail_dead_trials(optuna, study, db)
            finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
            done = len(study.get_trials(deepcopy=False, states=finished))
            remaining = trials - done
            if remaining > 0:
                study.optimize(_objective(optuna, base, space, out, seeds), n_trials=remaining, timeout=timeout,
                               catch=(DivergedError,), gc_after_trial=True,
                               callbacks=[optuna.study.MaxTrialsCallback(trials, states=finished),
                                          _trial_line(optuna, base.quiet)])
            else:  # (said even with quiet: the outputs are those of earlier runs)
                print(f"mibcore: note: the study already has {done} finished trials (--trials {trials}); "
                      "writing its outputs", file=sys.stderr)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return report.write(optuna, study, out, base, space, seeds)


def _check_options(trials, timeout, seeds, sampler):
    if trials < 1:
        raise UsageError(f"--trials must be >= 1, got {trials}")
    if timeout is not None and not timeout > 0:
        raise UsageError(f"--timeout must be > 0 seconds, got {timeout}")
    if sampler not in SAMPLERS:
        raise UsageError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if seeds is not None:
        check_seeds(seeds)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("tune runs each trial in one process; for several processes start several tunes "
                         "on one --storage (not torchrun)")


def _storage(optuna, url, given):
    """The study's database; UsageError naming --storage when it cannot be opened."""
    import sqlalchemy.exc

    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # workers wait for the lock
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=HEARTBEAT_GRACE,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
    except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as e:
        what = "--storage" if given else "the study database"
        raise UsageError(f"{what} {_without_password(url)}: cannot open it ({str(e).splitlines()[0]})") from None


def _without_password(url):
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{credentials.split(':')[0]}:***@{host}" if at and ":" in credentials else url


def _sampler(optuna, name, grid, seed):
    if name == "grid":
        return optuna.samplers.GridSampler(grid, seed=seed)
    return (optuna.samplers.TPESampler if name == "tpe" else optuna.samplers.RandomSampler)(seed=seed)


def _setup(base, space, seeds):
    """What the study's trials are (as JSON stores it): the config less NOT_COMPARED (the data
    file by its name: machines keep it in different folders), the search space and the seeds."""
    config = {k: v for k, v in dataclasses.asdict(base).items() if k not in NOT_COMPARED}
    config["data"] = os.path.basename(config["data"])
    setup = {"config": config, "search": {n: dataclasses.asdict(p) for n, p in space.items()},
             "seeds": list(seeds) if seeds else [base.seed]}
    return json.loads(json.dumps(setup))


def _check_setup(study, setup, name):
    """A study continues only with the config, search space and seeds that started it."""
    stored = study.user_attrs.get(SETUP)
    if stored is None:
        if study.get_trials(deepcopy=False):
            raise UsageError(f"study {name!r}: its trials are not of a mibcore tune; use another --study")
        study.set_user_attr(SETUP, setup)
    elif stored != setup:
        diff = _differences(setup, stored)
        raise UsageError(f"study {name!r} was started with another config (it differs in {', '.join(diff)}): "
                         "continue it with that config, or start a new one (another --out or --study)")


def _differences(setup, stored):
    """The keys (part.key) where two setups differ."""
    keys = []
    for part, value in setup.items():
        old = stored.get(part)
        if isinstance(value, dict) and isinstance(old, dict):
            keys += [f"{part}.{k}" for k in sorted(set(value) | set(old)) if value.get(k) != old.get(k)]
        elif value != old:
            keys.append(part)
    return keys


def _machine():
    """This machine: its host name and boot id (containers of one kernel share the boot id)."""
    boot = ""
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    return f"{socket.gethostname()} {boot}".strip()


def _alive(pid):
    if not isinstance(pid, int) or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _fail_dead_trials(optuna, study, db):
    """Marks failed the RUNNING trials of this machine whose process is gone (killed), and queues
    their parameters again (as Optuna's heartbeat does for other machines' trials)."""
    here, retry = _machine(), optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    study_id = db.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        if worker.get("machine") != here or _alive(worker.get("pid")):
            continue
        trial_id = db.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            if not db.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        print(f"mibcore: note: trial {trial.number} was left running by a process that is gone (PID "
              f"{worker['pid']}): marked failed; its parameters are queued again", file=sys.stderr)
        retry(study, db.get_trial(trial_id))


def objective_label(dev):
    """The name of the objective (dev_score) for metrics like `dev`."""
    key, label = dev_metric(dev)
    return label if key == "mae" else f"1 - {label}"


def _objective(optuna, base, space, out, seeds):
    def objective(trial):
        trial.set_user_attr("worker", {"machine": _machine(), "pid": os.getpid()})
        config = dataclasses.replace(base, **spaces.suggest(trial, space), resume=False,  # a new trial starts anew
                                     out=os.path.join(out, f"trial-{trial.number}"))
        prune = _pruning_hook(optuna, trial)
        try:
            if seeds:
                results = seed_runs(config, seeds, lambda seed, epoch, dev: seed == seeds[0] and prune(epoch, dev))
            else:
                results = [train(config, on_epoch=prune)[0]]
        except DivergedError as e:
            trial.set_user_attr("error", str(e))  # (a failed trial; the study goes on)
            raise
        except UsageError as e:  # (e.g. a d that the model's heads do not divide): name the values
            raise UsageError(f"trial {trial.number} {spaces.field_values(trial.params)}: {e}") from None
        scores = [dev_score(r["dev_best"]) for r in results]
        trial.set_user_attr("dev_scores", scores)
        trial.set_user_attr("objective", objective_label(results[0]["dev_best"]))
        return float(np.mean(scores))

    return objective


def _pruning_hook(optuna, trial):
    def on_epoch(epoch, dev):
        trial.report(dev_score(dev), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"{objective_label(dev)} {dev_score(dev):.4f} at epoch {epoch}: worse than "
                                     "the median of the earlier trials")

    return on_epoch


def _trial_line(optuna, quiet):
    """A callback printing one line per finished trial (instead of Optuna's log)."""
    def line(study, trial):
        if quiet:
            return
        state = optuna.trial.TrialState
        if trial.state == state.COMPLETE:
            scores = trial.user_attrs["dev_scores"]
            what = f"{trial.user_attrs['objective']} {trial.value:.4f}" + (
                f" (mean of {len(scores)} seeds)" if len(scores) > 1 else "")
        elif trial.state == state.PRUNED:
            what = f"pruned after epoch {trial.last_step}"
        else:
            what = f"failed: {trial.user_attrs.get('error', trial.state.name.lower())}"
        params = spaces.field_values(trial.params)
        best = ""
        with contextlib.suppress(ValueError):  # (no complete trial yet)
            best = f"; best: trial {study.best_trial.number} ({study.best_value:.4f})"
        print(f"mibcore: trial {trial.number} {params}: {what}{best}", file=sys.stderr, flush=True)

    return line

