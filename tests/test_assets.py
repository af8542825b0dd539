"""The example clips and the from-nothing sheet are written at the sampler settings they are given."""

import numpy as np
import torch
from PIL import Image

from conftest import random_context
from release.assets import CONTEXT, SCALE, write_from_nothing_sheet, write_generated
from msc.sampling import SamplerSettings, sample_video
from msc.video import read_video

FAST = SamplerSettings(steps=1, chunk=2)


def test_from_nothing_sheet_rows_are_the_seeds_samples(tmp_path, tiny_prior_model):
    path = write_from_nothing_sheet(str(tmp_path / "sheet.png"), tiny_prior_model, seeds=2, frames=6, every=3, settings=FAST)
    sheet = np.asarray(Image.open(path))  # [2 seeds * 16 * 2, 2 frames * 16 * 2, 3]
    assert sheet.shape == (64, 64, 3)
    seed1 = sample_video(tiny_prior_model, None, 6, FAST, seed=1).video[0, 3]  # the second row's second frame
    expected = ((seed1.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(sheet[32::2, 32::2], expected)


def test_generated_clips_extend_the_context(tmp_path, tiny_prior_model):
    clips = torch.cat([random_context(CONTEXT + 2, seed) for seed in range(2)])  # [2, 10, 3, 16, 16]
    paths = write_generated(str(tmp_path), "generated", tiny_prior_model, clips, frames=3, settings=FAST)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["generated_0.mp4", "generated_1.mp4"]
    video = read_video(paths[1], size=16 * SCALE)  # [T, 3, S, S], decoded by ffmpeg
    assert video.shape[0] == CONTEXT + 3
