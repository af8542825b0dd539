"""bench.study: a study file's pairs trained side by side by msc.train, a latent arm's autoencoder first."""

import json
import os
import sys

import pytest

from bench.study import arm_commands, load_study, train_pair

TINY = ["--config", "tiny", "--data", "procedural", "--frames", "4", "--batch-size", "2", "--steps", "2", "--warmup", "1",
        "--no-progress", "--threads", "1"]


def _study(tmp_path, **extra):
    study = {"name": "tiny", "question": "?", "from": "scratch", "minutes": 1, "pairs": [["plain", "noise"]], "common": TINY,
             "arms": {"plain": {"changes": "-", "args": [], "prediction": "-"},
                      "noise": {"changes": "-", "args": ["--set", "noise_scale=0.5"], "prediction": "-"}},
             "evaluate": {"module": "msc.evaluate", "args": ["--clips", "2"], "sampler": [["--steps", "1"]]}, **extra}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(study))
    return str(path)


def test_a_pair_trains_side_by_side(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = load_study(_study(tmp_path))
    train_pair(study, study["pairs"][0])
    for arm in ("plain", "noise"):
        assert os.path.isdir(os.path.join("runs", "tiny", arm, "final"))


def test_a_latent_arm_trains_its_autoencoder_within_its_minutes(tmp_path):
    study = load_study(_study(tmp_path, minutes=25))
    study["arms"]["latents"] = {"autoencoder": {"minutes": 7, "args": ["--factor", "4"]}, "args": [], "changes": "", "prediction": ""}
    ae, train = arm_commands(study, "latents")
    assert ae[:3] == [sys.executable, "-m", "msc.autoencoder"] and ae[ae.index("--minutes") + 1] == "7"
    assert train[train.index("--budget-minutes") + 1] == "18"
    assert train[train.index("--autoencoder") + 1] == os.path.join("runs", "tiny", "latents", "autoencoder", "final")


def test_an_arm_in_two_pairs_is_refused(tmp_path):
    with pytest.raises(ValueError, match="one pair only"):
        load_study(_study(tmp_path, pairs=[["plain", "noise"], ["plain"]]))


def test_a_world_study_table_has_a_column_per_rollout_kind_of_every_arm():
    from bench.study import world_table

    def report(gap, drift):
        rollout = {"seeds": 4, "frames": 256, "colour_drift": drift, "sharpness_ratio": 0.5, "motion_kept": 0.25}
        return {"episodes": 32, "context": 8, "frames": 16, "gap_other_actions_db": gap, "gap_copy_last_db": gap - 1,
                "scores": {name: {"psnr": 20.0} for name in ("true actions", "other actions", "copy-last")},
                "from_nothing": rollout, "from_context": dict(rollout, colour_drift=drift / 2),
                "from_nothing_fvd": {"fvd": 900.0, "fvd_engine": 300.0, "fvd_copy_first": 1200.0}}

    table = world_table({"control": {"steps_2": report(4.0, 0.2)}, "own": {"steps_2": report(3.5, 0.1)}},
                        {"control": {"step": 10}, "own": {"step": 9}})
    rows = [line for line in table.splitlines() if line.startswith("| control") or line.startswith("| own")]
    header = next(line for line in table.splitlines() if line.startswith("| arm"))
    assert header.count("|") == rows[0].count("|") == rows[1].count("|")
    assert "from context: colour drift" in header and rows[1].endswith("| 0.100 | 0.50 | 0.25 | 0.050 | 0.50 | 0.25 | 900 (300, 1200) |")
    engine = {"colour_drift": 0.15, "sharpness_ratio": 1.0, "motion_kept": 0.3}
    with_world = report(4.0, 0.2)
    for kind in ("from_nothing", "from_context"):
        with_world[kind] = dict(with_world[kind], engine=engine)
    table = world_table({"control": {"steps_2": with_world}}, {"control": {"step": 10}})
    world = next(line for line in table.splitlines() if line.startswith("| the world itself"))
    assert world.count("|") == header.count("|") and world.endswith("| 0.150 | 1.00 | 0.30 | 0.150 | 1.00 | 0.30 | |")
