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
