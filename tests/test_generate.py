"""The generate CLI end to end: a saved tiny model, a real input mp4, the written mp4 decoded by ffmpeg."""

import os
import subprocess
import sys

import pytest
import torch

from msc.data import procedural_clip
from msc.model import MSCModel, config_from_name
from msc.video import read_video, write_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny"
    torch.manual_seed(0)
    MSCModel(config_from_name("tiny")).save_pretrained(str(path))
    return str(path)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "msc.generate", *args, "--no-progress"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_extend_an_mp4(weights, tmp_path):
    clip = write_video(str(tmp_path / "in.mp4"), procedural_clip(3, 6, 16), fps=8)
    out = str(tmp_path / "out.mp4")
    r = _run("--weights", weights, "--input", clip, "--context", "4", "--frames", "3", "--steps", "2",
             "--out", out, "--k-s", "5", "--schedule", "diffusion-forcing")
    assert r.returncode == 0, r.stderr
    video = read_video(out, size=16)
    assert video.shape == (7, 3, 16, 16)
    assert (video[:4] - read_video(clip, size=16)[-4:]).abs().mean() < 0.05  # the context comes first


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--input", "missing.mp4"], "does not exist"),
        (["--k-s", "99"], "larger than"),
        (["--frames", "0"], "frames must be"),
        (["--history-guidance", "-2"], "history guidance must be in"),
        (["--history-guidance", "2", "--guidance-mode", "fractional", "--guidance-level", "1.5"], "fractional guidance level"),
    ],
)
def test_bad_input_gives_one_clear_line(weights, tmp_path, extra, message):
    # argparse keeps the last value of a repeated option, so ``extra`` overrides the defaults here
    r = _run("--weights", weights, "--frames", "2", "--steps", "1", "--out", str(tmp_path / "o.mp4"), *extra)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_history_guidance_flags(weights, tmp_path):
    outs = []
    for w in ("1", "2"):
        outs.append(str(tmp_path / f"w{w}.mp4"))
        r = _run("--weights", weights, "--frames", "4", "--steps", "2", "--chunk", "2", "--out", outs[-1],
                 "--history-guidance", w, "--guidance-mode", "fractional", "--guidance-level", "0.3",
                 "--guidance-schedule", "linear")
        assert r.returncode == 0, r.stderr
    a, b = read_video(outs[0], size=16), read_video(outs[1], size=16)
    assert a.shape == b.shape == (4, 3, 16, 16)


def test_missing_weights_folder(tmp_path):
    r = _run("--weights", str(tmp_path / "nope"), "--frames", "2", "--out", str(tmp_path / "o.mp4"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_readme_settings_table_is_made_from_the_settings():
    """One home for the sampling settings: the app documentation's table is the one the fields make."""
    from msc.sampling import settings_table

    doc = open(os.path.join(ROOT, "docs", "app.md")).read()
    assert settings_table() in doc, "docs/app.md is stale: paste `python -m msc.generate --settings-table`"


def test_preset_flags_start_from_the_preset_and_explicit_flags_win():
    import argparse

    from msc.model import AttentionWindows
    from msc.sampling import PRESETS, add_settings_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    windows = AttentionWindows()
    fast = settings_from_args(parser.parse_args(["--preset", "real-time"]), windows)
    assert fast == PRESETS["real-time"].__class__(**{**vars(PRESETS["real-time"]), "windows": windows})
    assert settings_from_args(parser.parse_args(["--preset", "real-time", "--steps", "6", "--k-s", "5"]), windows).steps == 6
    assert settings_from_args(parser.parse_args([]), windows).steps == PRESETS["default"].steps


def test_the_sampler_presets_live_with_the_weights(tmp_path, tiny_model):
    """A weights folder's sampler.json holds its presets (as a diffusers scheduler config sits beside its model): the
    CLIs and the app start from them; without the file, the library's; a bad file is refused naming it."""
    import json
    from dataclasses import replace

    from msc.app import MSCApp
    from msc.sampling import PRESETS, load_presets, write_presets

    assert load_presets(str(tmp_path)) == PRESETS  # no file
    own = {"default": replace(PRESETS["default"], steps=5, chunk=3), "real-time": replace(PRESETS["real-time"], steps=1)}
    write_presets(str(tmp_path), own)
    assert load_presets(str(tmp_path)) == own
    app = MSCApp(tiny_model, presets=own)
    assert (app.defaults.sampler.steps, app.defaults.sampler.chunk) == (5, 3) and app.api.real_time.sampler.steps == 1
    assert app.defaults.sampler.windows == tiny_model.config.windows
    json.dump({"default": {"steps": 0}, "real-time": {}}, open(tmp_path / "sampler.json", "w"))
    with pytest.raises(ValueError, match="sampler.json: preset 'default'.*steps"):
        load_presets(str(tmp_path))
    json.dump({"default": {"speed": 1}, "real-time": {}}, open(tmp_path / "sampler.json", "w"))
    with pytest.raises(ValueError, match="unknown settings"):
        load_presets(str(tmp_path))
    bundled = load_presets(os.path.join(ROOT, "weights"))["default"]  # the bundled model's own, measured, which its card states
    with open(os.path.join(ROOT, "weights", "README.md")) as f:
        assert f"Sampled by default at {bundled.steps} denoising steps, chunks of {bundled.chunk} frames" in f.read()
