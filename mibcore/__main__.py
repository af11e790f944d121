"""Command line: `python -m mibcore info` (more commands arrive with the training engine)."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mibcore", description="Multimodal Information Bottleneck toolkit")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, build, and which backend serves which device")
    args = parser.parse_args(argv)
    if args.command == "info":
        from mibcore.info import report

        print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
