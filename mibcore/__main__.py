"""Command line of mibcore.

  python -m mibcore info
  python -m mibcore train --model cmib --fusion tensor --data synthetic --epochs 5 --out runs/x
  python -m mibcore eval runs/x [--data PATH] [--split test] [--drop M] [--noise M=SIGMA] [--robustness]
  python -m mibcore predict runs/x --data samples.npz [--out predictions.csv]
  python -m mibcore train --config config.yaml --print-config   (the resolved config; trains nothing)
  python -m mibcore plot runs/x runs/y [--out curves.png]
  python -m mibcore tune --config search.yaml --trials 50 [--seeds 0 1 2] [--out runs/tune]
  python -m mibcore bench [--quick] [--op NAME] [--out DIR]
  python -m mibcore convert data.pkl data.h5 [--glove glove.txt]      (.pkl, or a .npz of arrays)
  torchrun --nproc_per_node 2 -m mibcore train ...      (DDP; gloo on CPU)

A mistake of the user's (mibcore.errors.UserError) prints one line `mibcore: error: ...` and
exits with its code: 2 usage or config (an unknown backend too), 3 data, 4 checkpoint, 5 training
diverged, 6 run folder locked by another training, 7 the OS refused a write (read-only or full
file system); Ctrl-C prints one line (whether a rerun resumes) and exits with 130. `--debug`
prints the traceback too.
"""
import argparse
import dataclasses
import json
import os
import sys
import traceback

from mibcore.errors import UsageError, UserError

INTERRUPTED = 130  # Ctrl-C's exit code: 128 + SIGINT, as shells report it


class _Parser(argparse.ArgumentParser):
    """Raises UsageError (printed by main() as one line, exit code 2) instead of printing the usage."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def _train_parser(commands, common):
    from mibcore.models import KL_REDUCTIONS, MODES, VARIANTS
    from mibcore.nn import FUSIONS
    from mibcore.train import TrainConfig
    from mibcore.train.beta_schedule import SCHEDULES
    from mibcore.train.config import AMP_MODES, field_help

    p = commands.add_parser("train", parents=[common], help="train a MIB model; writes OUT/metrics.json",
                            description="Train a MIB model. Every option is also a config field (--config); "
                                        "the command line wins.")
    p.add_argument("--config", help="JSON or YAML (.yaml, .yml) config: TrainConfig fields or MMSA-style sections")
    p.add_argument("--print-config", nargs="?", const="json", choices=("json", "yaml"), default=None,
                   help="print the resolved config (json, or yaml) and exit without training")
    defaults, helps = TrainConfig(), field_help()
    choices = {"model": VARIANTS, "mode": MODES, "fusion": tuple(FUSIONS), "amp": AMP_MODES,
               "kl_reduction": KL_REDUCTIONS, "beta_schedule": SCHEDULES}
    for field in dataclasses.fields(TrainConfig):
        name = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        shown = "none" if default in ((), "") else default
        text = f"{helps.get(field.name, '')} (default: {shown})".lstrip()
        if field.name == "no_ib":
            p.add_argument(name, nargs="*", default=None, metavar="MODALITY", help=text)
        elif field.name == "compile":  # --compile (the default mode), --compile MODE, --no-compile
            p.add_argument(name, nargs="?", const=True, default=None, metavar="MODE",
                           help=text)
            p.add_argument("--no-compile", dest="compile", action="store_false", default=None)
        elif isinstance(default, bool):
            p.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            p.add_argument(name, type=type(default), default=None, choices=choices.get(field.name), help=text)
    p.add_argument("--restart", dest="resume", action="store_false",
                   help="start over: delete OUT's checkpoint, best.pt, history and metrics (same as --no-resume)")
    p.add_argument("--seeds", type=int, nargs="+", help="one run per seed; writes OUT/results.md (mean +- sample std)")


def _eval_parser(commands, common):
    from mibcore.train.perturb import DROP_MODES
    from mibcore.train.robustness import LEVELS

    ev = commands.add_parser("eval", parents=[common], help="evaluate a run folder or best.pt",
                             description="Evaluate a run on a split; prints its metrics (JSON). --drop and "
                                         "--noise perturb the split's features first; --robustness evaluates "
                                         "every modality missing and noisy, and writes the table to the run "
                                         "folder (metrics.json's \"robustness\", results.md).")
    ev.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    ev.add_argument("--data", default=None, help="another dataset file (default: the run's data)")
    ev.add_argument("--split", default="test", choices=("train", "dev", "test"), help="(default: test)")
    ev.add_argument("--device", default=None, help="where to evaluate (default: the run's --device)")
    ev.add_argument("--drop", action="append", default=[], metavar="MODALITY",
                    help="evaluate with this modality of the run missing (repeatable; e.g. text, audio, visual)")
    ev.add_argument("--drop-mode", default="zero", choices=DROP_MODES,
                    help="a missing modality's features: zero, or each feature's mean over the training split "
                         "(default: zero)")
    ev.add_argument("--noise", action="append", default=[], metavar="MODALITY=SIGMA",
                    help="add Gaussian noise of SIGMA x each feature's training std to a modality (repeatable; "
                         "seeded by the run's seed)")
    ev.add_argument("--robustness", action="store_true",
                    help="the whole table: each modality missing (--drop-mode), each noisy at --levels")
    ev.add_argument("--levels", type=float, nargs="+", default=list(LEVELS), metavar="SIGMA",
                    help=f"noise levels of --robustness (default: {' '.join(f'{x:g}' for x in LEVELS)})")


def _predict_parser(commands, common):
    pr = commands.add_parser("predict", parents=[common], help="per-sample predictions of a run on a data file (CSV)",
                             description="Write one row per sample: id, prediction (regression) or each class's "
                                         "probability p_classC (emotion: the sigmoid of its logit), and the "
                                         "label(s) where the file has them.")
    pr.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    pr.add_argument("--data", default=None,
                    help="a dataset file (its --split), or a .npz of samples: a key per modality of the run "
                         "(text, audio, visual for the paper's; [N, T, D] or [N, D]), optional id, label "
                         "(default: the run's data)")
    pr.add_argument("--split", default="test", choices=("train", "dev", "test"),
                    help="the split of a dataset file (default: test)")
    pr.add_argument("--out", default="predictions.csv", help="the CSV to write (default: predictions.csv)")
    pr.add_argument("--device", default=None, help="where to run (default: the run's --device)")
    pr.add_argument("--batch-size", type=int, default=256, help="samples per forward pass (default: 256)")


def _tune_parser(commands, common):
    p = commands.add_parser("tune", parents=[common], help="hyper-parameter search (Optuna) over the config's search",
                            description="Hyper-parameter search on Optuna: each trial a training run, the objective "
                                        "the dev score that selects a run's best epoch (dev MAE, or 1 - dev mean F1), "
                                        "minimized. Writes OUT/results.md, results.csv, importance.csv, tune.png "
                                        "and best.yaml. Needs mibcore[tune].")
    p.add_argument("--config", required=True,
                   help="JSON or YAML config: TrainConfig fields and a `search` section, e.g. "
                        "search: {lr: {low: 1e-4, high: 1e-2, log: true}, d: {choices: [30, 50]}}")
    p.add_argument("--trials", type=int, default=20,
                   help="the study's finished (complete or pruned) trials: a rerun, or another process on the same "
                        "study, runs only those still missing (default: 20)")
    p.add_argument("--sampler", choices=("tpe", "random", "grid"), default="tpe",
                   help="how trials are chosen; grid needs choices or steps (default: tpe)")
    p.add_argument("--sampler-seed", type=int, default=None, help="seeds the sampler (default: none)")
    p.add_argument("--seeds", type=int, nargs="+",
                   help="train each trial with these seeds; its objective is their mean (default: the config's seed)")
    p.add_argument("--out", default="runs/tune", help="the output folder: trial-K runs, outputs, study.db "
                                                       "(default: runs/tune)")
    p.add_argument("--storage", default=None,
                   help="database URL of the study (sqlite:///path, postgresql://...), shared by several processes or "
                        "machines (default: sqlite OUT/study.db)")
    p.add_argument("--study", default="mibcore", help="the study's name in the storage (default: mibcore)")
    p.add_argument("--timeout", type=float, default=None,
                   help="start no new trial after this many seconds (default: none)")
    p.add_argument("--no-prune", dest="prune", action="store_false",
                   help="run every trial to its end (default: a median pruner stops hopeless trials)")


def _benchmarks():
    """The benchmark suite: mibcore.benchmarks where mibcore is installed, else (a source checkout
    run in place) the benchmarks/ package beside mibcore/ (not another `benchmarks` on the path);
    None where neither is there."""
    try:
        from mibcore import benchmarks

        return benchmarks
    except ImportError:
        pass
    checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    if not os.path.isfile(os.path.join(checkout, "__init__.py")):
        return None
    try:
        import benchmarks
    except ImportError:
        return None
    return benchmarks if os.path.dirname(os.path.abspath(benchmarks.__file__)) == checkout else None


def _parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the traceback of an error, not only its one-line message")
    parser = _Parser(prog="mibcore", description="Multimodal Information Bottleneck toolkit", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", parents=[common], help="versions, build, and which backend serves which device")
    _train_parser(commands, common)
    _eval_parser(commands, common)
    _predict_parser(commands, common)
    _tune_parser(commands, common)
    pl = commands.add_parser("plot", parents=[common], help="draw the training curves of runs on one figure")
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run folder (or its history.json)")
    pl.add_argument("--out", default="curves.png", help="the PNG to write (default: curves.png)")
    benchmarks = _benchmarks()
    if benchmarks is not None:
        bench = commands.add_parser("bench", parents=[common],
                                    help="run the benchmark suite; writes CSV, Markdown and PNG to --out")
        benchmarks.add_arguments(bench)
    cv = commands.add_parser("convert", parents=[common],
                             help="convert an MMSA or MAG-BERT pickle, or a .npz of arrays, to mibcore's HDF5")
    cv.add_argument("input")
    cv.add_argument("output")
    cv.add_argument("--glove", default=None, help="GloVe text file to embed MAG-BERT words")
    cv.add_argument("--text-backbone", default=None, help="local Hugging Face model dir: also store token ids")
    return parser


def main(argv=None):
    """Runs one command; returns its exit code (0, or a UserError's: see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _run(_parser().parse_args(argv))
    except UserError as e:
        if "--debug" in argv:
            traceback.print_exc()
        print(f"mibcore: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:  # Ctrl-C: train notes on it whether a rerun resumes
        if "--debug" in argv:
            traceback.print_exc()
        print("; ".join(["mibcore: error: interrupted", *getattr(e, "__notes__", ())]), file=sys.stderr)
        return INTERRUPTED


def _check_output_file(path, command="convert", kind=".h5"):
    """An output file's name: a file in an existing folder."""
    if os.path.isdir(path):
        raise UsageError(f"{command}: the output {path!r} is a directory; name the {kind} file to write")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise UsageError(f"{command}: the output's folder {folder!r} does not exist")


def _eval(args):
    from mibcore.train import evaluate_checkpoint, evaluate_robustness
    from mibcore.train.perturb import parse_noise
    from mibcore.train.robustness import markdown

    noise = dict(parse_noise(text) for text in args.noise)
    if len(noise) < len(args.noise):
        raise UsageError("--noise names a modality twice")
    if args.robustness:
        if args.drop or args.noise:
            raise UsageError("--robustness evaluates every --drop and --noise itself: give it neither")
        section = evaluate_robustness(args.checkpoint, args.data, args.split, device=args.device,
                                      levels=args.levels, drop_mode=args.drop_mode)
        print(markdown(section), end="")
    else:
        metrics = evaluate_checkpoint(args.checkpoint, args.data, args.split, device=args.device, drop=args.drop,
                                      drop_mode=args.drop_mode, noise=noise)
        print(json.dumps(metrics, indent=2, sort_keys=True))


def _run(args):
    if args.command == "info":
        from mibcore.info import report

        print(report())
    elif args.command == "train":
        from mibcore.train import TrainConfig, train, train_seeds
        from mibcore.train.config import dump_config, load_config

        overrides = {k: v for k, v in vars(args).items()
                     if k not in ("command", "config", "print_config", "seeds", "debug") and v is not None}
        if "no_ib" in overrides:
            overrides["no_ib"] = tuple(overrides["no_ib"])
        config = load_config(args.config, overrides) if args.config else TrainConfig(**overrides).validate()
        if args.print_config:
            print(dump_config(config, args.print_config), end="")
        elif args.seeds:
            summary = train_seeds(config, args.seeds)
            print(json.dumps({k: {"mean": m, "std": s} for k, (m, s) in summary.items()}, indent=2))
        else:
            result, _ = train(config)
            print(json.dumps(result["test"], indent=2, sort_keys=True))
    elif args.command == "eval":
        _eval(args)
    elif args.command == "predict":
        from mibcore.train.prediction import predict_file, write_predictions

        _check_output_file(args.out, "predict", "CSV")
        result = predict_file(args.checkpoint, args.data, args.split, device=args.device, batch_size=args.batch_size)
        write_predictions(result, args.out)
        what = "predictions" if result["pred"].shape[1] == 1 else f"x {result['pred'].shape[1]} class probabilities"
        print(f"wrote {args.out}: {len(result['id'])} {what}"
              + (", with labels" if result["label"] is not None else ", no labels"))
    elif args.command == "tune":
        from mibcore.tune import tune

        try:
            summary = tune(args.config, args.trials, out=args.out, sampler=args.sampler, seeds=args.seeds,
                           storage=args.storage, study_name=args.study, timeout=args.timeout, prune=args.prune,
                           sampler_seed=args.sampler_seed)
        except KeyboardInterrupt:
            print("mibcore: tune interrupted: the study keeps its finished trials; the same command continues it",
                  file=sys.stderr)
            return 130
        print(json.dumps(summary, indent=2))
    elif args.command == "plot":
        from mibcore.train import curves

        curves.plot([(run.rstrip("/"), curves.read_history(run)) for run in args.runs], args.out)
        print(f"wrote {args.out}")
    elif args.command == "bench":
        import importlib

        importlib.import_module(_benchmarks().__name__ + ".__main__").main(args=args)
    elif args.command == "convert":
        from mibcore.data import hdf5, load_dataset

        _check_output_file(args.output)
        data = load_dataset(args.input, glove=args.glove, text_backbone=args.text_backbone)
        hdf5.save(data, args.output)
        print(f"wrote {args.output}: " + ", ".join(f"{s} {len(p['label'])}" for s, p in data.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
