"""mibcore benchmark suite: every operator x backend x mode against the eager reference.

Run `python -m benchmarks [--quick]` in a checkout, or `mibcore bench [--quick]` where mibcore is
installed (setup.py installs this folder as mibcore.benchmarks; its imports are relative so that
both work); in a checkout, test_bench_cases.py times the same cases for pytest-benchmark
(`pytest benchmarks --benchmark-only`; it is not installed); --launch-report, --overhead and
--step-ops print the Triton launch table, the functional API's per-call cost and the ops and
predicted launches of a training step.
"""


def add_arguments(parser):
    """The runner's options (here, without the suite's imports, for mibcore's command line too)."""
    import torch

    parser.add_argument("--quick", action="store_true", help="the paper shapes and one scale shape, fewer repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=0, help="timed runs per mode (default 15, quick 5)")
    parser.add_argument("--op", action="append", help="only this operator (repeatable)")
    parser.add_argument("--out", default="bench-results", help="output folder")
    parser.add_argument("--launch-report", action="store_true",
                        help="print the Triton launches and their H200 floor times (no GPU needed), then exit")
    parser.add_argument("--sass", action="store_true",
                        help="with --launch-report: estimated times of the elementwise and tensor_fusion kernels from "
                             "their sm_90 SASS (compiles them; no GPU needed, without TRITON_INTERPRET)")
    parser.add_argument("--no-train", action="store_true", help="only the operator cases (no training step or epoch)")
    parser.add_argument("--skip-provider", action="append", default=[], metavar="NAME",
                        help="do not time this provider (repeatable; e.g. compile)")
    parser.add_argument("--list", action="store_true",
                        help="print the providers each case would time on --device, then exit")
    parser.add_argument("--step-ops", action="store_true",
                        help="print the ops and predicted CUDA launches of one C-MIB training step per backend "
                             "(counted on the CPU, nothing timed), then exit")
    parser.add_argument("--overhead", action="store_true",
                        help="print the functional API's per-call overhead over the torch operators, then exit")
