"""bench.speed: FLOPs counted, timings and bounds measured in one run (the numbers are the bench's job, not a test's)."""

import pytest
from conftest import perturbed_tiny

from bench.speed import format_report, measure


def test_speed_bench_reports_every_row_against_both_bounds():
    report = measure(perturbed_tiny(prior="previous_frame").train(), steps=2, batch=2, frames=4, repeat=1)
    assert set(report["rows"]) == {"one-frame forward", "generated frame (2 steps, chunks of 1)", "forward of a chunk of 8 frames",
                                   "training step (2 clips x 4 frames)",
                                   "the same, bf16 autocast (msc.train --bf16)"}
    for row in report["rows"].values():
        assert row["gflop"] > 0 and row["seconds"] > 0 and row["over_fp32_bound"] > 0 and row["over_bf16_bound"] > 0
    forward, frame = report["rows"]["one-frame forward"], report["rows"]["generated frame (2 steps, chunks of 1)"]
    # 2 steps + the commit, whose last block stops at its keys and values: between two and three forwards
    assert 2.5 * forward["gflop"] < frame["gflop"] < 2.99 * forward["gflop"]
    assert all(row["page_faults"] >= 0 and row["kernel_cpu_s"] >= 0 for row in report["rows"].values())
    for row in report["rows"].values():  # the floor: the same work at 6 channels a head, far fewer matmul FLOPs
        assert row["floor_width"] == 24 and 0 < row["floor_gflop"] < row["gflop"] / 2 and row["floor_seconds"] > 0
        assert row["least_over_fp32_bound"] == pytest.approx(1 + row["floor_over_fp32_bound"])
    text = format_report(report, "test machine")
    assert "× over fp32 bound" in text and "**The floor**" in text and "Where the training step's time goes" in text and "page faults" not in text
    beside = format_report(report, "test machine", system_allocator=report)  # the child's report has the same rows
    assert all(f"| {name} | " in beside.split("page faults a call")[1] for name in report["rows"])


def test_a_world_model_is_measured_with_its_actions_and_trains_under_bf16_with_float32_attention():
    """The world model's forwards take an action per frame; under the CPU's bf16 autocast its attention and action
    kernels still run in float32 (their bf16 backward is slower there), and the loss stays close to float32's."""
    import torch

    from bench.speed import training_work
    from msc.model import attention_in_float32
    from msc.world import ACTIONS

    model = perturbed_tiny(prior="action_kernel", actions=len(ACTIONS), action_keep_mask=True).train()
    report = measure(model, steps=1, batch=2, frames=4, repeat=1)
    assert all(row["gflop"] > 0 for row in report["rows"].values())
    q = torch.randn(1, 2, 4, 4, 2, 8)
    with torch.autocast("cpu", torch.bfloat16):
        assert attention_in_float32(q.bfloat16(), q.bfloat16(), q.bfloat16(), 3, 1, (True, False, False)).dtype == torch.float32
        assert model.action_kernels(torch.randn(2, 3, 16, 16), torch.tensor([1, 2])).dtype == torch.float32
    training_work(model, 2, 4, bf16=True)()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    from msc.diffusion import diffusion_loss

    clips = torch.rand(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    actions = torch.randint(0, len(ACTIONS), (2, 4), generator=torch.Generator().manual_seed(1))
    losses = []
    for bf16 in (False, True):
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            losses.append(float(diffusion_loss(model, clips, torch.Generator().manual_seed(2), actions=actions)))
    assert abs(losses[1] - losses[0]) < 0.02 * abs(losses[0])
