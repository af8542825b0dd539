"""bench.recipes: a study's runs trained by msc.train (two at a time) and their records kept for the model card."""

import os

import bench.recipes as recipes
from bench.recipes import run_summary

TINY = ["--config", "tiny", "--frames", "4", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--log-every", "1",
        "--no-progress", "--threads", "1"]


def test_a_studys_runs_train_and_keep_their_record_beside_the_results(tmp_path, monkeypatch):
    study = recipes.Study(TINY, {"plain": ("unchanged", []), "wider-noise": ("noise std 0.5", ["--set", "noise_scale=0.5"])})
    monkeypatch.setitem(recipes.STUDIES, "tiny-study", study)
    runs = str(tmp_path / "runs")
    recipes.train_pairs(list(study.recipes), 1.0, runs, "tiny-study")
    for name in study.recipes:
        assert os.path.isdir(os.path.join(runs, name, "final"))
    kept = str(tmp_path / "tiny-study_wider-noise_log.jsonl")
    recipes.keep_run_record(os.path.join(runs, "wider-noise"), kept)
    record = run_summary(kept)  # what the card reads once the run folder is gone
    assert record["steps"] == 2 and record["log"] and record["log_lost"] is None
    assert record["args"]["set"] == ["noise_scale=0.5"] and record["args"]["budget_minutes"] == 1.0
