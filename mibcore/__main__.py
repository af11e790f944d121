"""Command line of mibcore.

  python -m mibcore info
  python -m mibcore train --model cmib --fusion tensor --data synthetic --epochs 5 --out runs/x
  python -m mibcore eval runs/x [--data PATH] [--split test]
  python -m mibcore train --config config.yaml --print-config   (the resolved config; trains nothing)
  python -m mibcore plot runs/x runs/y [--out curves.png]
  python -m mibcore bench [--quick] [--op NAME] [--out DIR]
  python -m mibcore convert data.pkl data.h5 [--glove glove.txt]      (.pkl, or a .npz of arrays)
  torchrun --nproc_per_node 2 -m mibcore train ...      (DDP; gloo on CPU)

A mistake of the user's (mibcore.errors.UserError) prints one line `mibcore: error: ...` and
exits with its code: 2 usage or config, 3 data, 4 checkpoint, 5 training diverged, 6 run folder
locked by another training. `--debug` prints the traceback too.
"""
import argparse
import dataclasses
import json
import os
import sys
import traceback

from mibcore.errors import UsageError, UserError


class _Parser(argparse.ArgumentParser):
    """Raises UsageError (printed by main() as one line, exit code 2) instead of printing the usage."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def _train_parser(commands, common):
    from mibcore.models import MODALITIES
    from mibcore.train import TrainConfig

    p = commands.add_parser("train", parents=[common], help="train a MIB model; writes OUT/metrics.json")
    p.add_argument("--config", help="JSON or YAML (.yaml, .yml) config: TrainConfig fields or MMSA-style sections")
    p.add_argument("--print-config", nargs="?", const="json", choices=("json", "yaml"), default=None,
                   help="print the resolved config (json, or yaml) and exit without training")
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        name = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if field.name == "no_ib":
            p.add_argument(name, nargs="*", choices=MODALITIES, default=None)
        elif field.name == "compile":  # --compile (the default mode), --compile MODE, --no-compile
            p.add_argument(name, nargs="?", const=True, default=None, metavar="MODE",
                           help="torch.compile the training steps; MODE: default, reduce-overhead, max-autotune, "
                                "max-autotune-no-cudagraphs")
            p.add_argument("--no-compile", dest="compile", action="store_false", default=None)
        elif isinstance(default, bool):
            p.add_argument(name, action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument(name, type=type(default), default=None)
    p.add_argument("--restart", dest="resume", action="store_false",
                   help="start over: delete OUT's checkpoint, best.pt, history and metrics (same as --no-resume)")
    p.add_argument("--seeds", type=int, nargs="+", help="one run per seed; writes OUT/results.md (mean +- std)")


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
    ev = commands.add_parser("eval", parents=[common], help="evaluate a run folder or best.pt")
    ev.add_argument("checkpoint")
    ev.add_argument("--data", default=None)
    ev.add_argument("--split", default="test", choices=("train", "dev", "test"))
    ev.add_argument("--device", default=None, help="where to evaluate (default: the run's --device)")
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


def _check_output_file(path):
    """convert's output: a file name in an existing folder."""
    if os.path.isdir(path):
        raise UsageError(f"convert: the output {path!r} is a directory; name the .h5 file to write")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise UsageError(f"convert: the output's folder {folder!r} does not exist")


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
        from mibcore.train import evaluate_checkpoint

        metrics = evaluate_checkpoint(args.checkpoint, args.data, args.split, device=args.device)
        print(json.dumps(metrics, indent=2, sort_keys=True))
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
