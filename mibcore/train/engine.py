"""The training loop of one seed: Adam, best-dev selection, early stopping, a checkpoint after
every epoch, AMP, DDP through torchrun, torch.compile of the training steps or a CUDA graph of
each (cuda_graphs.py). A step makes no host sync (step.py): the loss is read back every
config.loss_every steps and at each epoch's end.

Exact resume: the checkpoint written after each epoch holds what the next epochs depend on (see
checkpoint.py), and each epoch's shuffle comes from (seed, epoch) (batching.py), so an interrupted
run resumed from its checkpoint ends with the same weights as an uninterrupted one.
Errors a user can fix are mibcore.errors.UserError's.
"""
import copy
import dataclasses
import math
import os
import sys
import time

import torch

from mibcore.data import MultimodalDataset, check_dataset
from mibcore.train import cuda_graphs, curves
from mibcore.train.batching import epoch_batches
from mibcore.train.beta_schedule import BetaSchedule
from mibcore.train.build import build_model, data_dims, load_data
from mibcore.train.checkpoint import resume, resume_hint, save_checkpoint
from mibcore.train.config import TrainConfig
from mibcore.train.evaluation import dev_score, evaluate, label_fit, train_label_mean
from mibcore.train.optimizer import adam, make_optimizer
from mibcore.train.progress import epoch_line, shows_epoch_lines, with_progress
from mibcore.train.run_folder import HISTORY, METRICS, claim_run_folder, write_json
from mibcore.train.runtime import distributed, memory_errors, native_bf16, process_device, seed_everything
from mibcore.train.step import EagerStep, LossReader

__all__ = ["TrainConfig", "adam", "train"]  # adam: benchmarks/cases.py times it as engine.adam


def train(config: TrainConfig, data=None, on_epoch=None):
    """Trains one seed; writes checkpoint.pt, best.pt, history.json, metrics.json and curves.png
    (where matplotlib is installed) to config.out. Returns (summary, model with the best weights).
    on_epoch(epoch, dev), if given, is called after each epoch's checkpoint with the epoch (from 1)
    and its dev metrics; an exception it raises ends the run there (`mibcore tune` prunes so)."""
    config.validate()
    rank, world = distributed()
    try:
        with claim_run_folder(config, rank), memory_errors("--batch-size, --seq-len or --hidden"):
            return _train(config, data, rank, world, on_epoch)  # (the folder claimed before the data is loaded)
    except KeyboardInterrupt as e:  # Ctrl-C: what a rerun does (the CLI prints the note)
        e.add_note(resume_hint(config))
        raise


def _train(config, data, rank, world, on_epoch):
    device = process_device(config, world)
    cuda_graphs.check(config, device, world)
    seed_everything(config.seed)
    source = config.data if data is None else "data"
    data = load_data(config) if data is None else check_dataset(data, source)
    for note in label_fit(data, source):  # (raises DataError for labels no metric fits)
        if rank == 0:
            print(f"mibcore: warning: {note}", file=sys.stderr, flush=True)
    model = build_model(config, data, device).to(device)
    dims = data_dims(data)
    optimizer = make_optimizer(config, model)
    train_mean = train_label_mean(data)
    os.makedirs(config.out, exist_ok=True)
    state, best_state = resume(config, model, optimizer, dims, writes=rank == 0) or (_new_state(), None)
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if config.compile:
        # Training steps only (evaluation stays eager: its batch sizes would recompile); the
        # checkpoints keep saving `model`, the uncompiled module (no `_orig_mod.` prefixes).
        # (DDP splits the graph at its gradient buckets, hence fullgraph only without it.)
        mode = None if config.compile in (True, "default") else config.compile
        ddp_model = torch.compile(ddp_model, fullgraph=world == 1, mode=mode)
    train_ds = MultimodalDataset(data["train"], token_ids=bool(config.text_backbone), modalities=model.modalities)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    schedule = BetaSchedule.of(config)
    beta = schedule.weight_tensor(device)  # (None for a constant beta)
    step = EagerStep(model, ddp_model, optimizer, scaler, config, device, beta)
    if config.cuda_graphs:
        step = cuda_graphs.GraphedStep(step, device)
    says = rank == 0 and not config.quiet
    if says and config.amp == "bf16" and device.type == "cpu" and not native_bf16():
        print("mibcore: warning: --amp bf16 on a CPU without native bf16 arithmetic (AVX512-BF16 or AMX) is "
              "emulated and usually several times slower than fp32; drop --amp", file=sys.stderr, flush=True)
    epochs_before = state["epoch"]
    while state["epoch"] < config.epochs and state["bad_epochs"] < config.patience:
        epoch, start = state["epoch"], time.perf_counter()
        batches = with_progress(epoch_batches(config, len(train_ds), epoch, rank, world), config, epoch, rank)
        model.train()
        train_loss, last_beta = _train_one_epoch(step, train_ds, batches, config, epoch, schedule, beta)
        dev = evaluate(model, data["dev"], device, config, train_mean)
        improved = _record_epoch(state, epoch, train_loss, last_beta, dev)
        if improved:
            best_state = copy.deepcopy(model.state_dict())
        if rank == 0:
            save_checkpoint(config, model, optimizer, state, best_state if improved else None, dims)
        if shows_epoch_lines(config, rank):
            print(epoch_line(config, state, time.perf_counter() - start), file=sys.stderr, flush=True)
        if on_epoch is not None:
            on_epoch(state["epoch"], dev)
    if says:
        _say_how_it_ended(config, state, trained=state["epoch"] > epochs_before)
    if best_state is not None:
        model.load_state_dict(best_state)  # the test metrics are those of the best dev epoch
    test = evaluate(model, data["test"], device, config, train_mean)
    if rank == 0:
        write_json(config.out, METRICS, test)
        write_json(config.out, HISTORY, state["history"])
        if state["history"] and curves.write_run_curves(config.out, state["history"]) is None and not config.quiet:
            print(f"mibcore: note: no {config.out}/curves.png: matplotlib is not installed", file=sys.stderr)
    return _result(config, state, test), model


def _train_one_epoch(step, train_ds, batches, config, epoch, schedule, beta):
    """One optimizer step per batch, each with the schedule's KL weight (filled into the tensor
    `beta` the step reads, where the schedule varies); returns the mean training loss over this
    process's samples and the KL weight of the epoch's last step. Raises DivergedError for a loss
    that is not finite, at the first read after it (LossReader)."""
    losses = LossReader(config, epoch, len(batches))
    weight = schedule.beta
    for i, batch in enumerate(batches):
        if beta is not None:
            weight = schedule.at(epoch, i, len(batches))
            beta.fill_(weight)  # in place, no host sync: the step (or its CUDA graph) reads it
        losses.add(step(*train_ds[batch]), len(batch))
    return losses.mean(), weight


def _say_how_it_ended(config, state, trained):
    """A note on stderr where the run did not simply train its --epochs: it stopped early, or it had
    finished before this call (its metrics are then those of the earlier training)."""
    stopped = state["epoch"] < config.epochs
    if stopped and trained:
        print(f"mibcore: note: stopped early after epoch {state['epoch']} of {config.epochs}: no better dev metric "
              f"for {config.patience} epochs (--patience); the best epoch is {state['best_epoch']}", file=sys.stderr)
    elif not trained:
        why = "stopped early" if stopped else "trained its epochs"
        print(f"mibcore: note: {config.out} had already {why} (epoch {state['epoch']} of {config.epochs}): nothing "
              f"trained; these are its metrics. --restart trains it over; a larger --epochs continues it",
              file=sys.stderr)


def _new_state():
    """The early-stopping state of a run that has trained no epoch (the checkpoint keeps it)."""
    return {"epoch": 0, "best_score": math.inf, "best_epoch": None, "bad_epochs": 0, "history": []}


def _record_epoch(state, epoch, train_loss, beta, dev):
    """Adds an epoch to state: its history entry (with beta, the KL weight of its last step), the
    best dev epoch and the early-stopping count. Returns whether its dev score is a new best."""
    score = dev_score(dev)
    improved = score < state["best_score"]  # strict: on a tie the earlier epoch stays the best
    if improved:
        state["best_score"], state["best_epoch"], state["bad_epochs"] = score, epoch + 1, 0
    else:
        state["bad_epochs"] += 1
    state["history"].append({"epoch": epoch + 1, "train_loss": train_loss, "beta": beta, "dev": dev})
    state["epoch"] = epoch + 1
    return improved


def _result(config, state, test):
    """train()'s summary; dev_best is the dev metrics of best_epoch, the epoch kept in best.pt."""
    best_epoch = state.get("best_epoch")  # .get: checkpoints from before it was recorded lack it
    dev_best = state["history"][best_epoch - 1]["dev"] if best_epoch else {}  # history[i]: epoch i + 1
    return {"test": test, "dev_best": dev_best, "best_epoch": best_epoch, "epochs_run": state["epoch"],
            "config": dataclasses.asdict(config)}
