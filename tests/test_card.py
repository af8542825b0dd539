"""The model card is written from measured files only; the results page shows the bundled model's measured tables."""

import json
import os

import pytest

from msc.evaluate import main as evaluate_main
from msc.sampling import SamplerSettings, write_presets
from msc.train import main as train_main
from release.card import readme_tables, write_card

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _with_fvd(report: dict, values) -> dict:
    """A report as ``--fvd`` writes it, with made-up FVD numbers (the FVD numbers themselves: tests/test_fvd.py)."""
    out = json.loads(json.dumps(report))
    out["sets"]["procedural"]["fvd"] = {"clips": 2, "frames": 4, "i3d_seconds": 1.0}
    for value, m in zip(values, out["sets"]["procedural"]["methods"].values(), strict=True):
        m["fvd"] = value
    return out


def test_card_from_a_tiny_run(tmp_path):
    run = str(tmp_path / "run")
    train_main(["--config", "tiny", "--frames", "4", "--batch-size", "2", "--steps", "3", "--warmup", "1",
                "--log-every", "1", "--no-progress", "--set", "prior=flow_splat", "--out", run])
    weights = os.path.join(run, "final")
    write_presets(weights, {"default": SamplerSettings(steps=1, chunk=2), "real-time": SamplerSettings(steps=1, chunk=1)})
    evaluation = str(tmp_path / "eval.json")
    assert evaluate_main(["--weights", weights, "--clips", "2", "--context", "2", "--horizon", "2", "--steps", "1",
                          "--chunk", "2", "--rollout", "4", "--rollout-clips", "1", "--json", evaluation]) == 0
    report = json.load(open(evaluation))
    fvd_path = str(tmp_path / "eval_fvd.json")
    json.dump(_with_fvd(report, [300.0, 200.0, 150.0, 120.0, 110.0, 100.0]), open(fvd_path, "w"))
    state = json.load(open(os.path.join(run, "checkpoint", "state.json")))
    record = str(tmp_path / "shipped_checkpoint.json")
    json.dump({k: state[k] for k in ("step", "elapsed", "args", "config")}, open(record, "w"))
    history = tmp_path / "history"
    history.mkdir()
    for i, minutes in enumerate((30, 15)):  # the runs the weights started from: only their records are read
        json.dump({"step": 100, "elapsed": minutes * 60.0, "args": {}}, open(history / f"run{i}.state.json", "w"))

    card = open(write_card(weights, record, str(history), evaluation, fvd_path)).read()
    procedural = report["sets"]["procedural"]["methods"]
    assert "# MSC video model (bundled)" in card and "pushed forward along the DIS flow" in card
    assert "first 45 minutes in 2 runs" in card and f"({state['step']} steps of 2 clips of 4 frames" in card
    assert "| copy the last frame |" in card and "| flow extrapolation (Farnebäck, warped back) |" in card
    assert "| flow splatting (DIS, pushed forward) |" in card and "| MSC (these weights) |" in card
    assert f"{procedural['msc']['psnr_mean']:.2f} / {procedural['msc']['ssim_mean']:.3f} / " \
           f"{procedural['msc']['motion_ratio']:.2f} / {procedural['msc']['trajectory_error']:.2f} px" in card
    gap = procedural["msc"]["psnr_mean"] - procedural["copy-last"]["psnr_mean"]
    assert f"* **procedural**: {gap:+.2f} dB against copy-last" in card
    assert "| procedural (2 × 4) | MSC (these weights) |" in card and "**100.0**" in card  # the lowest FVD in bold
    assert "## 256-frame rollout" in card and f"{report['rollout']['colour_drift_max']:.3f}" in card
    anchor = procedural["flow-splatting"]  # the flow_splat prior's anchor alone
    below = procedural["msc"]["psnr_mean"] <= anchor["psnr_mean"]
    assert ("* The network does not improve on its own anchor, the flow splatting (DIS, pushed forward) alone (" in card) == below
    assert "## What it does not do" in card and "Sampled by default at 1 denoising steps, chunks of 2" in card
    assert readme_tables(report, json.load(open(fvd_path)))[0] in card


def test_the_results_page_shows_the_bundled_models_measured_tables():
    """docs/results.md's tables (and the README's first) are what ``python -m release.card --readme`` prints from the
    shipped evaluation files."""
    from release.card import BUNDLED

    names = [BUNDLED[k] for k in ("eval", "fvd_eval", "equal_time_eval", "equal_time_fvd_eval")]
    tables = readme_tables(*[json.load(open(os.path.join(ROOT, n))) for n in names])
    results = open(os.path.join(ROOT, "docs", "results.md")).read()
    assert tables[0] in open(os.path.join(ROOT, "README.md")).read(), "README.md's table of the bundled model is stale"
    for table in tables:
        assert table in results, "docs/results.md is stale: python -m release.card --bundled --readme"


def test_settings_study_table_marks_the_choice_and_the_default(tmp_path):
    """bench.settings' summary of per-setting evaluations (as msc.evaluate --fvd --rollout writes them) and its table;
    bench.from_nothing's table; both in the card."""
    from bench.settings import choose, report_path, summarise
    from bench.from_nothing import from_nothing_table
    from bench.settings import settings_table

    run = str(tmp_path / "run")
    train_main(["--config", "tiny", "--frames", "4", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--no-progress", "--out", run])
    grid = [(1, 2), (2, 1)]
    for i, (steps, chunk) in enumerate(grid):
        path = report_path(str(tmp_path), steps, chunk)
        assert evaluate_main(["--weights", os.path.join(run, "final"), "--clips", "2", "--context", "2", "--horizon", "2",
                              "--steps", str(steps), "--chunk", str(chunk), "--rollout", "4", "--rollout-clips", "1", "--json", path]) == 0
        report = json.load(open(path))
        for j, m in enumerate(report["sets"]["procedural"]["methods"].values()):
            m["fvd"] = 150.0 - 10 * i if j else 50.0  # copy-last 50; the model 150 at 1×2, 140 at 2×1
        json.dump(report, open(path, "w"))
    rows, copy_last = summarise(str(tmp_path), grid)
    assert [r["fvd"] for r in rows] == [150.0, 140.0] and copy_last["fvd"] == 50.0
    assert rows[0]["drift"] == json.load(open(report_path(str(tmp_path), 1, 2)))["rollout"]["colour_drift_max"]
    table = settings_table({"grid": rows, "copy_last": copy_last, "rule": "the lowest FVD", "choice": {"steps": 2, "chunk": 1},
                            "default": {"steps": 1, "chunk": 2}})
    assert "| 2 | 1 **(chosen)** |" in table and "| 1 | 2 **(the default)** |" in table and "| 50.0 | 0 | 1× |" in table
    assert "Rule: the lowest FVD → steps 2, chunk 1; the default: steps 1, chunk 2." in table
    settings = str(tmp_path / "settings.json")
    json.dump({"machine": "the test machine", "grid": rows, "copy_last": copy_last, "rule": "the lowest FVD",
               "choice": {"steps": 2, "chunk": 1}, "default": {"steps": 1, "chunk": 2}}, open(settings, "w"))
    from_nothing = {"rule": "the lowest FVD", "count_per_set": 2, "sets": ["real", "procedural"], "frames": 16,
                    "machine": "the test machine", "sampler": {"steps": 2, "chunk": 8}, "sheet": "from_nothing.png",
                    "rows": [{"first_frame_steps": 0, "fvd": 900.0, "sharpness_ratio": 3.5, "calls": 4, "seconds_per_video": 0.5},
                             {"first_frame_steps": 16, "fvd": 400.0, "sharpness_ratio": 1.1, "calls": 20, "seconds_per_video": 0.9}],
                    "chosen": 16, "default": 8}
    first_table = from_nothing_table(from_nothing)
    assert "| 0 (in the first chunk: 2) | 900.0 | 3.50× | 4 |" in first_table and "| 16 **(chosen)** | 400.0 |" in first_table
    assert "4 videos of 16 frames from nothing per value" in first_table and "Rule: the lowest FVD → 16; the default: 8." in first_table
    json.dump(from_nothing, open(tmp_path / "from_nothing.json", "w"))
    state = json.load(open(os.path.join(run, "checkpoint", "state.json")))
    json.dump(state, open(tmp_path / "record.json", "w"))
    write_presets(os.path.join(run, "final"), {"default": SamplerSettings(steps=1, chunk=2), "real-time": SamplerSettings(steps=1, chunk=1)})
    card = open(write_card(os.path.join(run, "final"), str(tmp_path / "record.json"), str(tmp_path / "no_history"),
                           report_path(str(tmp_path), 1, 2), settings_path=settings,
                           from_nothing_path=str(tmp_path / "from_nothing.json"))).read()
    assert "## How the default sampler settings were chosen" in card and table in card
    assert "## From nothing" in card and first_table in card and "![Videos from nothing](from_nothing.png)" in card
    kept = [{"fvd_seeds": [150.0], "drift": 0.01, "sharpness_ratio": 1.0}, {"fvd_seeds": [100.0], "drift": 0.2, "sharpness_ratio": 1.0},
            {"fvd_seeds": [120.0], "drift": 0.04, "sharpness_ratio": 2.0}]
    assert choose(kept) is kept[2]  # the best FVD that keeps the colour
    assert choose(kept[1:2]) is None  # none keeps its colour: none qualifies (not the best FVD whatever its colour)
    none = settings_table({"grid": rows, "copy_last": copy_last, "rule": "the rule", "choice": None, "default": {"steps": 1, "chunk": 2}})
    assert "**(chosen" not in none and "| 1 | 2 **(the default)** |" in none
    assert "Rule: the rule → no setting qualifies (every rollout's colour drifts past 0.05); the default: steps 1, chunk 2." in none


def test_settings_study_with_the_anchor_after_the_context_in_its_grid(tmp_path):
    """``--context-anchors``: every steps x chunk also with another anchor after the context, kept in its own report
    (the prior's keeps the name it always had), and a column of the table where the grid varies it."""
    from bench.settings import report_path, setting, settings_table

    assert report_path("r", 2, 8) == report_path("r", 2, 8, anchor="prior") == os.path.join("r", "steps2_chunk8.json")
    assert report_path("r", 2, 8, 1, "flow_splat") == os.path.join("r", "steps2_chunk8_flow_splat_seed1.json")
    assert setting((2, 8)) == (2, 8, "prior") and setting((2, 8, "flow_splat")) == (2, 8, "flow_splat")
    row = {"clips": 55, "rollout_clips": 16, "psnr": 32.0, "ssim": 0.9, "motion": 0.01, "motion_truth": 0.01, "fvd": 100.0,
           "drift": 0.08, "sharpness_ratio": 0.9, "motion_kept": 0.1}
    rows = [{**row, "steps": 2, "chunk": 8, "context_anchor": "prior"}, {**row, "steps": 2, "chunk": 8, "context_anchor": "flow_splat"}]
    table = settings_table({"grid": rows, "copy_last": {"psnr": 31.0, "ssim": 0.8, "fvd": 144.0}, "rule": "the lowest FVD",
                            "choice": {"steps": 2, "chunk": 8, "context_anchor": "flow_splat"},
                            "default": {"steps": 2, "chunk": 8}})
    assert "| steps | chunk | anchor after the context | real PSNR / SSIM |" in table
    assert "| 2 | 8 **(chosen)** | flow_splat | 32.00 / 0.900 |" in table and "| 2 | 8 **(the default)** | prior |" in table
    assert "→ steps 2, chunk 8, anchor after the context flow_splat; the default: steps 2, chunk 8, anchor after" in table


def test_settings_rule_ties_fvds_within_their_seed_noise_and_prefers_the_sharpness_of_the_context():
    """With FVDs at several seeds, a setting within two standard errors of the lowest mean is tied with it, and the
    tie goes to the rollout whose sharpness is closest to the context's (either way: 0.7× beats 1.5×); a rollout that
    keeps its colour and keeps moving qualifies before any that slows to a halt."""
    from bench.settings import choose, fvd_mean_and_error
    from bench.settings import settings_table

    textured = {"steps": 2, "chunk": 4, "fvd_seeds": [160.0, 170.0, 165.0], "drift": 0.03, "sharpness_ratio": 2.0}
    plain = {"steps": 2, "chunk": 8, "fvd_seeds": [170.0, 172.0, 168.0], "drift": 0.02, "sharpness_ratio": 1.4}
    far = {"steps": 1, "chunk": 8, "fvd_seeds": [190.0, 192.0, 194.0], "drift": 0.01, "sharpness_ratio": 1.0}
    drifting = {"steps": 1, "chunk": 4, "fvd_seeds": [100.0], "drift": 0.06, "sharpness_ratio": 1.0}
    mean, error = fvd_mean_and_error(textured)
    assert mean == 165.0 and abs(error - (25.0 / 3) ** 0.5) < 1e-9 and fvd_mean_and_error(drifting) == (100.0, 0.0)
    assert choose([textured, plain, far, drifting]) is plain  # 5 apart, within 2 × 3.1: tied; 1.4× is nearer 1× than 2×
    assert choose([textured, dict(plain, fvd_seeds=[180.0, 181.0, 182.0]), far]) is textured  # 16 apart: not tied
    assert choose([dict(textured, sharpness_ratio=1.5), dict(plain, sharpness_ratio=0.7)])["chunk"] == 8
    moving = dict(far, motion_kept=0.8)  # the worst FVD, but the only rollout that keeps moving as well as its colour
    assert choose([dict(textured, motion_kept=0.2), dict(plain, motion_kept=0.3), moving, drifting]) is moving
    rows = [dict(r, psnr=30.0, ssim=0.8, motion=0.004, motion_truth=0.008, fvd=r["fvd_seeds"][0], clips=55, rollout_clips=2,
                 fvd_mean=fvd_mean_and_error(r)[0], fvd_error=fvd_mean_and_error(r)[1]) for r in (textured, plain, drifting)]
    table = settings_table({"grid": rows, "copy_last": {"psnr": 31.0, "ssim": 0.9, "fvd": 144.0}, "rule": "the rule", "seeds": 3,
                            "choice": {"steps": 2, "chunk": 8}, "default": {"steps": 2, "chunk": 8}})
    assert "| FVD | FVD over 3 seeds | rollout colour drift |" in table and "also scored at 2 more seeds" in table
    assert "| 2 | 8 **(chosen, the default)** | 30.00 / 0.800 | 0.0040 (0.0080) | 170.0 | 170.0 ± 1.2 | 0.020 | 1.40× |" in table
    assert "| 1 | 4 | 30.00 / 0.800 | 0.0040 (0.0080) | 100.0 | – | 0.060 | 1.00× |" in table
