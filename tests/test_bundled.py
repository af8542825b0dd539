"""The bundled model in weights/: loads offline from safetensors + JSON, generates sane frames."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import torch

from msc.model import MSCModel
from msc.sampling import sample_video
from msc.video import read_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(ROOT, "weights")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    return MSCModel.from_pretrained(WEIGHTS).eval()


def test_the_folder_holds_safetensors_json_and_a_card():
    names = set(os.listdir(WEIGHTS))
    assert {"config.json", "model.safetensors", "README.md"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")) for n in names)  # no pickle anywhere
    size_mb = os.path.getsize(os.path.join(WEIGHTS, "model.safetensors")) / 1e6
    assert 1 < size_mb < 60
    config = json.load(open(os.path.join(WEIGHTS, "config.json")))
    assert config["channels"] == 3 and config["image_size"] // config["patch_size"] >= 16


def test_the_bundled_card_is_its_measurements():
    """weights/README.md is what release.card writes from the measured files of the study that trained the weights."""
    from release.card import BUNDLED, write_card

    path = {name: os.path.join(ROOT, p) for name, p in BUNDLED.items()}
    card = open(os.path.join(WEIGHTS, "README.md")).read()
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("config.json", "sampler.json", "model.safetensors"):
            shutil.copy(os.path.join(WEIGHTS, name), tmp)
        again = open(write_card(tmp, path["run"], path["history"], path["eval"], path["fvd_eval"],
                                settings_path=path["settings"], from_nothing_path=path["from_nothing"])).read()
    assert card == again, "weights/README.md is stale: python -m release.card --bundled (docs/training.md, Shipping a model)"
    assert "## Continuing held-out video" in card and "## What it does not do" in card


def test_generates_finite_frames_in_range_from_an_asset_clip(model):
    clip = read_video(os.path.join(ROOT, "assets", "heldout_0.mp4"), size=model.config.image_size)
    video = sample_video(model, clip[None, -8:], 4, steps=8, chunk=4, seed=0).video
    new = video[0, 8:]
    assert new.shape == (4, 3, 64, 64)
    assert torch.isfinite(new).all() and new.min() >= -1 and new.max() <= 1
    assert new.std() > 0.05  # not a blank frame
    # and it continues the clip: the first new frame is closer to the last context frame than to noise
    assert (new[0] - clip[-1]).abs().mean() < (torch.randn_like(new[0]).clamp(-1, 1) - clip[-1]).abs().mean()


def test_loads_offline_in_a_fresh_process():
    code = ("import os; assert os.environ['HF_HUB_OFFLINE'] == '1'; from msc.model import MSCModel; "
            f"m = MSCModel.from_pretrained({WEIGHTS!r}); print(m.config.attention, m.config.depth)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9"}  # any attempt to reach the network would fail
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].split()[0] == "msc"


def test_the_bundled_world_model_loads_and_its_card_is_its_measurements():
    """weights/world: a world model by the issue's contract (MSCModel.from_pretrained of its absolute path), sampled
    with its own presets, and a card that is what release.world_card writes from the measured files."""
    from msc.sampling import load_presets
    from msc.world import ACTIONS
    from release.world_card import SHIPPED_CONTINUED, write_card

    folder = os.path.join(WEIGHTS, "world")
    model = MSCModel.from_pretrained(folder)
    assert model.config.actions == len(ACTIONS) and model.config.prior == "action_kernel"
    assert load_presets(folder)["real-time"].chunk == 1
    card = open(os.path.join(folder, "README.md")).read()
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("config.json", "sampler.json"):
            shutil.copy(os.path.join(folder, name), tmp)
        again = open(write_card(tmp, os.path.join(ROOT, "studies", "world3", "results.json"), "world32-kernel",
                                os.path.join(ROOT, "bench", "results", "world.json"),
                                os.path.join(ROOT, "bench", "results", "play.json"),
                                SHIPPED_CONTINUED)).read()
    assert card == again, "weights/world/README.md is stale: python -m release.world_card ... (its docstring)"
