"""The op counter of a training step (benchmarks/step_ops.py, `python -m benchmarks --step-ops`)
and its launch rule."""
import pytest
import torch

import mibcore
from benchmarks import step_ops

SMALL = dict(d=10, hidden=16, text_dim=12, audio_dim=5, visual_dim=4, batch=4, seq_len=6)


@pytest.fixture(scope="module")
def counts():
    return {b: step_ops.summary(step_ops.count_step(b, **SMALL)) for b in step_ops.backends_here()}


def test_every_backend_is_counted_here(counts):
    assert set(counts) == {b for b in ("reference", "cpu", "triton") if b in mibcore.backends.available("cpu")}
    assert "reference" in counts and len(counts) >= 2


def test_a_cmib_step_counts_its_phases_fused_calls_and_rng_draws(counts):
    for backend, s in counts.items():
        assert all(s[phase] > 0 for phase in step_ops.PHASES), (backend, s)
        assert s["ops"] == sum(s[phase] for phase in step_ops.PHASES)
        assert s["sync"] == 0, backend  # (the no-host-sync test's claim, seen by the counter)
        # one rng draw per dropout and bottleneck sample: 2 encoders x 3 layers x 4 dropouts, 2 embedding
        # dropouts, the fusion's dropout, 4 bottlenecks
        assert s["rng"] == 31, (backend, s)
        assert s["fused"] == (0 if backend == "reference" else 62), (backend, s)  # forward + backward calls
        assert 0 < s["launches"] < s["ops"]


def test_fused_backends_take_fewer_ops_and_launches_than_the_reference(counts):
    for backend in set(counts) - {"reference"}:
        assert counts[backend]["ops"] < counts["reference"]["ops"]
        assert counts[backend]["launches"] < counts["reference"]["launches"]


def test_the_launch_rule():
    x = torch.zeros(3)
    assert step_ops.predicted_launches(torch.ops.aten.view.default, (x, [3])) == 0
    assert step_ops.predicted_launches(torch.ops.aten.add.Tensor, (x, x)) == 1
    assert step_ops.predicted_launches(torch.ops.aten._local_scalar_dense.default, (x,)) == 0
    small = [torch.zeros(4)] * 36
    assert step_ops.multi_tensor_launches([small] * 4) == 1   # 36 tensors of 4 lists: one launch
    assert step_ops.multi_tensor_launches([small + [x]] * 4) == 2
    assert step_ops.multi_tensor_launches([small + [x]]) == 1  # one list: 110 tensors per launch
    big = torch.empty(320 * 65536 + 1, device="meta")
    assert step_ops.multi_tensor_launches([[big]]) == 2  # 321 chunks: 320 per launch
