"""docs/adding-an-operator.md, tested: a toy operator declared through its spec alone (a reference
and a `cpu` implementation, in a module outside mibcore) is picked up by every generic test list,
and a spec that lacks a backend CI requires, without saying why, fails the run."""
import os
import re
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOY = textwrap.dedent('''
    """A toy operator, y = x * factor, registered as a pytest plugin (-p toy_scale) so that it exists
    before the generic tests are collected."""
    import os

    import torch

    from mibcore import _checks, backends, ops
    from mibcore.ops._register import python_operator
    from mibcore.ops._spec import DEVICE_TYPES, Benchmark, Implementation, OpSpec, Sample


    def toy_scale(x, factor):
        _checks.floating("toy_scale", "x", x)
        factor = _checks.finite_number("toy_scale", "factor", factor)
        return backends.runner("toy_scale", x.device)(x, factor)


    def _forward(x: torch.Tensor, factor: float) -> torch.Tensor:
        return x * factor


    def _save(ctx, inputs, output):
        ctx.factor = inputs[1]


    python_operator("toy_scale_cpu", _forward, _forward, fake_forward=lambda x, factor: torch.empty_like(x),
                    fake_backward=lambda x, factor: torch.empty_like(x), setup_context=_save,
                    gradients=lambda ctx, backward_op, grad: (backward_op(grad, ctx.factor), None),
                    check_forward=lambda op, x, factor: None, check_backward=lambda op, x, factor: None)


    def _samples(device, dtype):
        x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        return [Sample("3x5", (x.to(dtype=dtype, device=device), 2.5)), Sample("empty", (x[:0].to(dtype), -1.0))]


    def _double_backward():
        x = torch.randn(3, 4, dtype=torch.float64).requires_grad_()
        return (x,), lambda x: toy_scale(x, 3.0)


    def _fuzz(st, tensors):
        return st.tuples(tensors([(2, 3)]), st.floats(-4, 4)).map(lambda d: Sample("fuzz", (d[0][0], d[1])))


    ops.register(OpSpec(
        "toy_scale", toy_scale,
        {"reference": Implementation(DEVICE_TYPES, function=lambda x, factor: x * factor),
         "cpu": Implementation(("cpu",), op="mibcore::toy_scale_cpu")},
        call_fused=lambda op, x, factor: op(x, factor), samples=_samples, double_backward=_double_backward,
        fuzz=_fuzz,
        benchmarks=lambda: (Benchmark("64x64", "paper", lambda device: Sample("64x64", (torch.randn(64, 64), 2.0)),
                                      bytes_moved=4 * 4 * 64 * 64),),
        missing={"triton": "a toy"} if os.environ.get("TOY_DECLARES_TRITON_MISSING") else {},
    ))
''')

GENERIC = ["tests/test_contract.py", "tests/test_double_backward.py", "tests/test_fuzz.py"]


def _pytest(tmp_path, *args, **env):
    (tmp_path / "toy_scale.py").write_text(TOY)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT]), "TRITON_INTERPRET": "1",
                   "MIBCORE_REQUIRE_BACKENDS": "", **env}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "toy_scale", "-p", "no:cacheprovider", "-q", *args],
                          capture_output=True, text=True, cwd=ROOT, env=environment, timeout=600)


def test_a_toy_operator_is_picked_up_by_every_generic_test(tmp_path):
    out = _pytest(tmp_path, "-vv", "-k", "toy_scale", *GENERIC)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    passed = re.findall(r"^(tests/\S+)::(\w+)\[toy_scale\S*\] (?:PASSED|SKIPPED)", out.stdout, re.M)
    # Every generic test function of every generic file ran the toy operator, but those for
    # operators with random samples, with a GPU backend or with a Triton operator: the toy has none.
    not_for_the_toy = {"test_random_samples_follow_the_philox_contract", "test_smoke",
                       "test_gpu_operators_equal_the_cpu_backend_given_the_same_rng",
                       "test_triton_operators_refuse_shapes_that_disagree"}
    for path in GENERIC:
        source = open(os.path.join(ROOT, path)).read()
        generic = set(re.findall(r"^def (test_\w+)\(op\b", source, re.M)) - not_for_the_toy
        assert generic and generic <= {name for p, name in passed if p == path}, (path, generic, out.stdout[-2000:])
    # contract: oracle x 4 dtypes x (reference + cpu per level), operands, reaches; double backward x 2;
    # fuzz
    assert len(passed) >= 4 * 2 + 2 + 2 + 1, out.stdout[-2000:]


def test_a_spec_without_a_required_backend_fails_the_run(tmp_path):
    out = _pytest(tmp_path, "--collect-only", "tests/test_double_backward.py",
                  MIBCORE_REQUIRE_BACKENDS="cpu,triton")
    assert out.returncode != 0
    assert "triton for toy_scale" in out.stdout + out.stderr
    # Declared missing, with a reason: the run goes on.
    out = _pytest(tmp_path, "--collect-only", "tests/test_double_backward.py",
                  MIBCORE_REQUIRE_BACKENDS="cpu,triton", TOY_DECLARES_TRITON_MISSING="1")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_the_benchmark_suite_times_a_toy_operator_from_its_spec(tmp_path):
    (tmp_path / "toy_scale.py").write_text(TOY)
    script = ("import sys, toy_scale; from benchmarks.__main__ import main; "
              "sys.exit(main(sys.argv[1:]))")
    out = subprocess.run([sys.executable, "-c", script, "--op", "toy_scale", "--no-train", "--repeats", "1",
                          "--skip-provider", "compile", "--device", "cpu", "--out", str(tmp_path / "bench")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT])})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = (tmp_path / "bench" / "results.csv").read_text().splitlines()[1:]
    assert [r.split(",")[:2] for r in rows] == [["toy_scale", "64x64"]] * 2, rows
    assert [r for r in rows if ",reference," in r] and [r for r in rows if ",cpu," in r], rows
