"""bench.speed: FLOPs counted, timings and bounds measured in one run (the numbers are the bench's job, not a test's)."""

from conftest import perturbed_tiny

from bench.speed import format_report, measure


def test_speed_bench_reports_every_row_against_both_bounds():
    report = measure(perturbed_tiny(prior="previous_frame").train(), steps=2, batch=2, frames=4, repeat=1)
    assert set(report["rows"]) == {"one-frame forward", "generated frame (2 steps, chunks of 1)", "training step (2 clips x 4 frames)"}
    for row in report["rows"].values():
        assert row["gflop"] > 0 and row["seconds"] > 0 and row["over_fp32_bound"] > 0 and row["over_bf16_bound"] > 0
    forward, frame = report["rows"]["one-frame forward"], report["rows"]["generated frame (2 steps, chunks of 1)"]
    assert abs(frame["gflop"] - 3 * forward["gflop"]) < 0.05 * frame["gflop"]  # 2 steps + the commit: three forwards
    text = format_report(report, "test machine")
    assert "× over fp32 bound" in text and "Where the training step's time goes" in text
