"""Command line of mibcore.

  python -m mibcore info
  python -m mibcore train --model cmib --fusion tensor --data synthetic --epochs 5 --out runs/x
  python -m mibcore eval runs/x [--data PATH] [--split test]
  python -m mibcore convert data.pkl data.h5 [--glove glove.txt]
  torchrun --nproc_per_node 2 -m mibcore train ...      (DDP; gloo on CPU)
"""
import argparse
import dataclasses
import json
import sys


def _train_parser(commands):
    from mibcore.train import TrainConfig

    p = commands.add_parser("train", help="train a MIB model; writes OUT/metrics.json")
    p.add_argument("--config", help="JSON config (TrainConfig fields or MMSA-style sections)")
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        name = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if field.name == "no_ib":
            p.add_argument(name, nargs="*", choices=("text", "audio", "visual"), default=None)
        elif isinstance(default, bool):
            p.add_argument(name, action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument(name, type=type(default), default=None)
    p.add_argument("--seeds", type=int, nargs="+", help="one run per seed; writes OUT/results.md (mean +- std)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mibcore", description="Multimodal Information Bottleneck toolkit")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, build, and which backend serves which device")
    _train_parser(commands)
    ev = commands.add_parser("eval", help="evaluate a run folder or best.pt")
    ev.add_argument("checkpoint")
    ev.add_argument("--data", default=None)
    ev.add_argument("--split", default="test", choices=("train", "dev", "test"))
    cv = commands.add_parser("convert", help="convert an MMSA or MAG-BERT pickle to mibcore's HDF5")
    cv.add_argument("input")
    cv.add_argument("output")
    cv.add_argument("--glove", default=None, help="GloVe text file to embed MAG-BERT words")
    cv.add_argument("--text-backbone", default=None, help="local Hugging Face model dir: also store token ids")
    args = parser.parse_args(argv)

    if args.command == "info":
        from mibcore.info import report

        print(report())
    elif args.command == "train":
        from mibcore.train import TrainConfig, train, train_seeds
        from mibcore.train.engine import load_config

        overrides = {k: v for k, v in vars(args).items()
                     if k not in ("command", "config", "seeds") and v is not None}
        if "no_ib" in overrides:
            overrides["no_ib"] = tuple(overrides["no_ib"])
        config = load_config(args.config, overrides) if args.config else TrainConfig(**overrides).validate()
        if args.seeds:
            summary = train_seeds(config, args.seeds)
            print(json.dumps({k: {"mean": m, "std": s} for k, (m, s) in summary.items()}, indent=2))
        else:
            result, _ = train(config)
            print(json.dumps(result["test"], indent=2, sort_keys=True))
    elif args.command == "eval":
        from mibcore.train import evaluate_checkpoint

        print(json.dumps(evaluate_checkpoint(args.checkpoint, args.data, args.split), indent=2, sort_keys=True))
    elif args.command == "convert":
        from mibcore.data import check_dataset, hdf5, pickles

        data = check_dataset(pickles.load(args.input, glove=args.glove, text_backbone=args.text_backbone), args.input)
        hdf5.save(data, args.output)
        print(f"wrote {args.output}: " + ", ".join(f"{s} {len(p['label'])}" for s, p in data.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
