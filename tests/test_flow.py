"""The classical predictor (constant-velocity Farnebäck extrapolation) and the sprite locator, on motion
whose truth is known: a photograph panned by whole pixels, and the procedural generator's own sprites."""

import torch

from msc.data.procedural import TEST_SEED_OFFSET, procedural_clip, procedural_sprites
from msc.flow import backward_flow, extrapolate, flow_extrapolation, warp
from msc.metrics import psnr
from msc.tracking import locate_sprites, trajectory_error


def _panned(frames: int, step: int, size: int = 48) -> torch.Tensor:
    """``[1, frames, 3, S, S]``: a smooth random image moving ``step`` pixels to the right per frame."""
    g = torch.Generator().manual_seed(0)
    big = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 40, generator=g), size=(size, size + frames * step + 8),
                                          mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1
    return torch.stack([big[0, :, :, 8 + (frames - i) * step: 8 + (frames - i) * step + size] for i in range(frames)])[None]


def test_flow_of_a_pan_is_the_pan():
    clip = _panned(2, 2)
    flow = backward_flow(clip[:, 0], clip[:, 1])  # [1, 2, S, S]: where each pixel of the last frame was before
    centre = flow[0, :, 12:-12, 12:-12]
    assert abs(float(centre[0].median()) + 2) < 0.25 and abs(float(centre[1].median())) < 0.25


def test_extrapolation_predicts_a_pan_far_better_than_copy_last():
    clip = _panned(6, 2)
    pred = flow_extrapolation(clip[:, :3], 3)  # [1, 3, 3, S, S]
    truth = clip[:, 3:]
    inner = (..., slice(10, -10), slice(10, -10))  # away from the border the pan uncovers
    assert float(psnr(pred[inner], truth[inner]).min()) > 30
    assert float(psnr(pred[inner], truth[inner]).mean()) > float(psnr(clip[:, 2:3].expand_as(truth)[inner], truth[inner]).mean()) + 8


def test_warp_by_zero_is_identity_and_one_context_frame_is_copy_last():
    frames = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.allclose(warp(frames, torch.zeros(2, 2, 16, 16)), frames, atol=1e-6)
    assert torch.equal(extrapolate(None, frames, [1, 2])[:, 1], frames)
    assert torch.equal(flow_extrapolation(frames[:, None], 2)[:, 0], frames)


def test_the_locator_finds_the_generators_sprites():
    seeds = [TEST_SEED_OFFSET + i for i in range(6)]
    clips = torch.stack([procedural_clip(s, 12, 64) for s in seeds])
    sprites = [procedural_sprites(s, 12, 64) for s in seeds]
    found = locate_sprites(clips[0], sprites[0])
    assert found.shape == sprites[0]["centre"].shape
    floor = trajectory_error(clips[:, 6:], sprites, 6)
    frozen = trajectory_error(clips[:, 5:6].expand(-1, 6, -1, -1, -1), sprites, 6)
    assert floor < 2.0 and frozen > 2 * floor  # the truth is found; a frozen frame's sprites are not where they go
