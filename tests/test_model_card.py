"""The model card is written from measured files only."""

import json
import os

import pytest

from msc.evaluate import main as evaluate_main
from release.model_card import readme_tables, write_card
from msc.train import main as train_main


def test_card_from_a_tiny_run(tmp_path):
    run = str(tmp_path / "run")
    train_main(["--config", "tiny", "--frames", "4", "--batch-size", "2", "--steps", "3", "--warmup", "1",
                "--log-every", "1", "--no-progress", "--out", run])
    weights = os.path.join(run, "final")
    evaluation = str(tmp_path / "eval.json")
    assert evaluate_main(["--weights", weights, "--clips", "2", "--context", "2", "--horizon", "2", "--steps", "1",
                          "--chunk", "2", "--rollout", "4", "--rollout-clips", "1", "--json", evaluation]) == 0
    report = json.load(open(evaluation))
    with_fvd = json.loads(json.dumps(report))  # as `--fvd` writes it (the FVD numbers themselves: tests/test_fvd.py)
    with_fvd["sets"]["procedural"]["fvd"] = {"clips": 2, "frames": 4, "i3d_seconds": 1.0}
    for i, m in enumerate(with_fvd["sets"]["procedural"]["methods"].values()):
        m["fvd"] = 100.0 + i
    fvd_path = str(tmp_path / "eval_fvd.json")
    json.dump(with_fvd, open(fvd_path, "w"))
    equal_time = json.loads(json.dumps(report))  # a dense baseline beside the model, as --baseline dense=… writes it
    for entry in equal_time["sets"].values():
        entry["methods"]["dense"] = {**entry["methods"]["msc"], "psnr_mean": entry["methods"]["msc"]["psnr_mean"] - 1.0}
    equal_time_path = str(tmp_path / "eval_equal_time.json")
    json.dump(equal_time, open(equal_time_path, "w"))
    steps2 = str(tmp_path / "eval_steps2.json")
    assert evaluate_main(["--weights", weights, "--clips", "2", "--context", "2", "--horizon", "2", "--steps", "2",
                          "--chunk", "1", "--rollout", "0", "--json", steps2]) == 0
    path = write_card(weights, run, os.path.join(run, "log.jsonl"), evaluation, "python -m msc.train --config tiny",
                      fvd_path=fvd_path, equal_time_path=equal_time_path, sampler_paths=(steps2,))
    card = open(path).read()
    assert "### MSC against dense attention at equal wall time" in card and "| held-out set | copy the last frame | MSC | dense attention |" in card
    assert "same evaluation at 1 denoising step, chunks of 2 (`eval_equal_time.json`)" in card
    assert "* procedural: MSC" in card and "**met**" in card
    assert "* Per clip: better than copy-last on " in card and " of 2 clips; median clip " in card
    assert "### Denoising steps and chunk size" in card and "| 1 | 2 |" in card and "| 2 | 1 |" in card
    assert "### Fréchet Video Distance" in card and "| procedural | 2 × 4 | copy-last |" in card and "**101.0**" in card
    assert f"{report['sets']['procedural']['methods']['copy-last']['psnr_mean']:.2f}" in card
    assert "3 steps in" in card and "python -m msc.train --config tiny" in card
    assert "| `hidden_size` | `48` |" in card
    assert os.path.exists(os.path.join(weights, "training_log.jsonl"))

    # weights fine-tuned from that run, with the study that chose them (as python -m bench.recipes --study finetune writes it)
    tuned = str(tmp_path / "tuned")
    train_main(["--config", "tiny", "--frames", "4", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--log-every", "1",
                "--no-progress", "--init-from", os.path.join(run, "checkpoint"), "--set", "noise_scale=0.5", "prior=previous_frame",
                "--context-corruption", "0.05", "--out", tuned])
    study = str(tmp_path / "finetune.json")
    json.dump({"minutes": 0.1, "machine": "the test machine", "results": {
        "continue": {"changes": "the recipe, continued unchanged", "sampler": {"steps": 1, "chunk": 2}, "steps": 2, "sets": report["sets"]}}},
              open(study, "w"))
    path = write_card(os.path.join(tuned, "final"), run, os.path.join(run, "log.jsonl"), evaluation,
                      "python -m msc.train --config tiny", finetune_runs=[tuned], finetune_study_paths=[study])
    card = open(path).read()
    assert "## Fine-tune study" in card and "| `continue`: the recipe, continued unchanged | 2 |" in card
    assert "scored on the same held-out sets at 1 denoising step, chunks of 2:" in card
    assert "Fine-tune (these weights): from the long run's final EMA, **2 steps in" in card and "`noise_scale=0.5 prior=previous_frame`" in card
    assert "context corruption: noise of std up to 0.05 on the nearly clean prefix" in card
    assert "* 5 optimiser steps" in card and "| `noise_scale` | `0.5` |" in card
    assert os.path.exists(os.path.join(tuned, "final", "training_log_finetune.jsonl"))

    # a second fine-tune, of the first one's weights, chosen by a second study
    tuned2 = str(tmp_path / "tuned2")
    train_main(["--config", "tiny", "--frames", "4", "--batch-size", "2", "--steps", "4", "--warmup", "1", "--log-every", "1",
                "--no-progress", "--init-from", os.path.join(tuned, "final"), "--set", "noise_scale=0.5", "prior=previous_frame",
                "--context-corruption", "0.15", "--frame-loss", "log", "--max-chunk", "3", "--shared-level-prob", "0.5",
                "--out", tuned2])
    study2 = str(tmp_path / "finetune2.json")
    json.dump({"study": "finetune2", "minutes": 0.2, "machine": "the test machine", "results": {
        "context-corruption0.15": {"changes": "more corruption", "sampler": {"steps": 16, "chunk": 4}, "steps": 4,
                                   "sets": report["sets"]}}}, open(study2, "w"))
    path = write_card(os.path.join(tuned2, "final"), run, os.path.join(run, "log.jsonl"), evaluation,
                      "python -m msc.train --config tiny", finetune_runs=[tuned, tuned2], finetune_study_paths=[study, study2])
    card = open(path).read()
    assert "## Fine-tune study 1" in card and "## Fine-tune study 2" in card and "`python -m bench.recipes --study finetune2`" in card
    assert "After fine-tune 1, changes to it were tried" in card and "| `context-corruption0.15`: more corruption | 4 |" in card
    assert card.count("beside a fine-tune that changes nothing") == 1  # the second study has no unchanged control
    assert "* Fine-tune 1: from the long run's final EMA, **2 steps in" in card
    assert "* Fine-tune 2 (these weights): from fine-tune 1's final EMA, **4 steps in" in card and "std up to 0.15" in card
    assert "each frame's loss the log of its error (`--frame-loss log`" in card
    assert card.count("each frame's loss the log of its error") == 1  # fine-tune 1 trained on squared errors
    assert "anchors of chunks of 1 to 3 frames instead of 1 to 4, 50 % of clips with one noise level" in card
    assert card.count("anchors of chunks") == 1 and "clips of 4 frames instead of" not in card  # only what changed
    assert "* 9 optimiser steps" in card
    for name in ("training_log_finetune.jsonl", "training_log_finetune2.jsonl"):
        assert os.path.exists(os.path.join(tuned2, "final", name))

    # the card can be rewritten from what it leaves beside the weights (a clone has no run folders)
    beside = lambda name: os.path.join(tuned2, "final", name)
    again = write_card(os.path.join(tuned2, "final"), beside("training_log.jsonl"), beside("training_log_dense_baseline.jsonl"),
                       evaluation, "python -m msc.train --config tiny",
                       finetune_runs=[beside("training_log_finetune.jsonl"), beside("training_log_finetune2.jsonl")],
                       finetune_study_paths=[study, study2])
    assert open(again).read() == card
    # a fine-tune whose per-step log was lost: its record (steps, time, arguments, final loss) says so, and the card too
    record = json.load(open(beside("training_log_finetune2.state.json")))
    os.remove(beside("training_log_finetune2.jsonl"))
    with pytest.raises(FileNotFoundError, match="log_lost"):
        write_card(os.path.join(tuned2, "final"), run, os.path.join(run, "log.jsonl"), evaluation, "python -m msc.train",
                   finetune_runs=[tuned, beside("training_log_finetune2.jsonl")])
    json.dump({**record, "final_loss": 0.125, "log_lost": "its machine went"}, open(beside("training_log_finetune2.state.json"), "w"))
    lost = open(write_card(os.path.join(tuned2, "final"), run, os.path.join(run, "log.jsonl"), evaluation,
                           "python -m msc.train --config tiny", finetune_runs=[tuned, beside("training_log_finetune2.jsonl")],
                           finetune_study_paths=[study, study2])).read()
    assert "final training loss 0.1250 (its per-step log is lost: its machine went)." in lost and "* 9 optimiser steps" in lost
    assert "of `training_log_finetune2.jsonl` only its record, `training_log_finetune2.state.json`." in lost
    assert "`training_log_finetune2.jsonl` beside" not in lost and not os.path.exists(beside("training_log_finetune2.jsonl"))
    assert json.load(open(beside("training_log_finetune2.state.json")))["log_lost"] == "its machine went"
    # a study that started from another run says so (bench.recipes writes what each study started from)
    json.dump({**json.load(open(study2)), "started_from": "a kept run"}, open(study2, "w"))
    card = open(write_card(os.path.join(tuned2, "final"), run, os.path.join(run, "log.jsonl"), evaluation,
                           "python -m msc.train --config tiny", finetune_runs=[tuned, tuned2], finetune_study_paths=[study, study2])).read()
    assert "After a kept run, changes to it were tried" in card and "After the long run, changes to it were tried" in card
    with pytest.raises(ValueError, match="2 fine-tune studies for 1 fine-tune runs"):
        write_card(os.path.join(tuned2, "final"), run, os.path.join(run, "log.jsonl"), evaluation, "python -m msc.train",
                   finetune_runs=[tuned], finetune_study_paths=[study, study2])


def test_the_results_page_shows_the_bundled_models_measured_tables():
    """docs/results.md's tables are what ``python -m release.model_card --readme`` prints from the shipped evaluation
    files."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    weights = os.path.join(root, "weights")
    names = ("evaluation.json", "evaluation_fvd.json", "evaluation_equal_time.json", "evaluation_fvd_equal_time.json")
    reports = [json.load(open(os.path.join(weights, n))) if os.path.exists(os.path.join(weights, n)) else None for n in names]
    tables = readme_tables(*reports)
    results = open(os.path.join(root, "docs", "results.md")).read()
    for table in tables:
        assert table in results, "docs/results.md is stale: python -m release.model_card --eval weights/evaluation.json " \
                                "--fvd-eval weights/evaluation_fvd.json --equal-time-eval weights/evaluation_equal_time.json " \
                                "--equal-time-fvd-eval weights/evaluation_fvd_equal_time.json --readme"


def test_settings_study_table_marks_the_choice_and_the_default(tmp_path):
    """bench.settings' summary of per-setting evaluations (as msc.evaluate --fvd --rollout writes them) and its table;
    bench.from_nothing's table; both in the card."""
    from bench.settings import choose, report_path, summarise
    from release.model_card import from_nothing_table, settings_table

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
    card = open(write_card(os.path.join(run, "final"), run, os.path.join(run, "log.jsonl"), report_path(str(tmp_path), 1, 2),
                           "python -m msc.train --config tiny", settings_path=settings,
                           from_nothing_path=str(tmp_path / "from_nothing.json"))).read()
    assert "### How the default sampler settings were chosen" in card and table in card
    assert "### How many steps the first frame from nothing takes" in card and first_table in card
    kept = [{"fvd_seeds": [150.0], "drift": 0.01, "sharpness_ratio": 1.0}, {"fvd_seeds": [100.0], "drift": 0.2, "sharpness_ratio": 1.0},
            {"fvd_seeds": [120.0], "drift": 0.04, "sharpness_ratio": 2.0}]
    assert choose(kept) is kept[2] and choose(kept[1:2]) is kept[1]  # the best FVD that keeps the colour; else the best FVD


def test_settings_rule_ties_fvds_within_their_seed_noise_and_prefers_the_sharpness_of_the_context():
    """With FVDs at several seeds, a setting within two standard errors of the lowest mean is tied with it, and the
    tie goes to the rollout whose sharpness is closest to the context's (either way: 0.7× beats 1.5×)."""
    from bench.settings import choose, fvd_mean_and_error
    from release.model_card import settings_table

    textured = {"steps": 2, "chunk": 4, "fvd_seeds": [160.0, 170.0, 165.0], "drift": 0.03, "sharpness_ratio": 2.0}
    plain = {"steps": 2, "chunk": 8, "fvd_seeds": [170.0, 172.0, 168.0], "drift": 0.02, "sharpness_ratio": 1.4}
    far = {"steps": 1, "chunk": 8, "fvd_seeds": [190.0, 192.0, 194.0], "drift": 0.01, "sharpness_ratio": 1.0}
    drifting = {"steps": 1, "chunk": 4, "fvd_seeds": [100.0], "drift": 0.06, "sharpness_ratio": 1.0}
    mean, error = fvd_mean_and_error(textured)
    assert mean == 165.0 and abs(error - (25.0 / 3) ** 0.5) < 1e-9 and fvd_mean_and_error(drifting) == (100.0, 0.0)
    assert choose([textured, plain, far, drifting]) is plain  # 5 apart, within 2 × 3.1: tied; 1.4× is nearer 1× than 2×
    assert choose([textured, dict(plain, fvd_seeds=[180.0, 181.0, 182.0]), far]) is textured  # 16 apart: not tied
    assert choose([dict(textured, sharpness_ratio=1.5), dict(plain, sharpness_ratio=0.7)])["chunk"] == 8
    rows = [dict(r, psnr=30.0, ssim=0.8, motion=0.004, motion_truth=0.008, fvd=r["fvd_seeds"][0], clips=55, rollout_clips=2,
                 fvd_mean=fvd_mean_and_error(r)[0], fvd_error=fvd_mean_and_error(r)[1]) for r in (textured, plain, drifting)]
    table = settings_table({"grid": rows, "copy_last": {"psnr": 31.0, "ssim": 0.9, "fvd": 144.0}, "rule": "the rule", "seeds": 3,
                            "choice": {"steps": 2, "chunk": 8}, "default": {"steps": 2, "chunk": 8}})
    assert "| FVD | FVD over 3 seeds | rollout colour drift |" in table and "also scored at 2 more seeds" in table
    assert "| 2 | 8 **(chosen, the default)** | 30.00 / 0.800 | 0.0040 (0.0080) | 170.0 | 170.0 ± 1.2 | 0.020 | 1.40× |" in table
    assert "| 1 | 4 | 30.00 / 0.800 | 0.0040 (0.0080) | 100.0 | – | 0.060 | 1.00× |" in table
