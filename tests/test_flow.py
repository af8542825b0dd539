"""The classical predictors (constant-velocity extrapolation, warped back or splatted forward) and the sprite locator, on motion
whose truth is known: a photograph panned by whole pixels, and the procedural generator's own sprites."""

import pytest
import torch

from msc.data.procedural import TEST_SEED_OFFSET, procedural_clip, procedural_sprites
from msc.flow import backward_flow, extrapolate, flow_extrapolation, splat, warp
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


def _disc_clip(frames: int, speed: float, size: int = 48, radius: float = 4.0) -> tuple:
    """``[1, frames, 3, S, S]``: a red disc moving ``speed`` pixels a frame to the right over a still grey gradient,
    and its true centres ``[frames]`` (column)."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    background = torch.stack([xs / size - 0.5, ys / size - 0.5, (xs + ys) / (2 * size) - 0.5])  # [3, S, S] in [-0.5, 0.5]
    red = torch.tensor([0.9, -0.9, -0.9])[:, None, None]
    centres = torch.tensor([10.0 + speed * i for i in range(frames)])
    clip = [torch.where(((xs - c) ** 2 + (ys - size / 2) ** 2 <= radius ** 2)[None], red, background) for c in centres]
    return torch.stack(clip)[None], centres


def _red_centre(frame: torch.Tensor) -> float:
    """Column of the centroid of the red pixels of ``[3, S, S]``."""
    mask = (frame[0] > 0.5) & (frame[1] < -0.5)
    return float(mask.nonzero()[:, 1].float().mean()) if mask.any() else float("nan")


def test_splatting_moves_every_pixel_by_its_velocity_and_warping_back_reads_the_flow_where_it_draws():
    """A uniform whole-pixel velocity moves the frame exactly, the strip it uncovers taken from ``fill``. With only a
    disc's pixels given its motion (the background still), reading that flow back at the pixel being drawn draws no
    disc where it goes once it has moved further than its radius; pushing the pixels forward carries its colour there
    (summation splatting blends what lands on one pixel: the disc with the still background it arrives over)."""
    clip, centres = _disc_clip(8, 3.0)
    last, fill = clip[:, 3], torch.zeros_like(clip[:, 3])
    shifted = splat(last, torch.tensor([2.0, -1.0])[None, :, None, None].expand(1, 2, 48, 48), fill)[0]  # [3, S, S]
    assert torch.equal(shifted[:, :47, 2:], last[0, :, 1:, :46]) and torch.equal(shifted[:, :, :2], fill[0, :, :, :2])
    on_disc = ((last[:, 0] > 0.5) & (last[:, 1] < -0.5)).float()  # [1, S, S]
    velocity = torch.stack([3.0 * on_disc, torch.zeros_like(on_disc)], dim=1)  # [1, 2, S, S]
    for h in (3, 4):
        read_back = warp(last, -h * velocity)[0]
        assert float(read_back[0, 24, int(centres[3 + h])]) < 0.5  # no disc where it goes: its pixels read the background
        pushed = splat(last, h * velocity, fill=clip[:, 3 + h])[0]
        arrived = (pushed - clip[0, 3 + h]).abs().sum(0) > 1e-3  # [S, S]: where it differs from the true frame
        assert not arrived[:, : int(centres[3 + h]) - 4].any()  # nothing left behind the disc's new place
        front = int(centres[3 + h]) + 3  # the disc's leading edge: its red and the background still there, half each
        assert abs(float(pushed[0, 24, front]) - 0.5 * (0.9 + float(last[0, 0, 24, front]))) < 1e-5


def test_splatting_predicts_a_pan_and_the_uncovered_border_keeps_the_backward_warp():
    clip = _panned(6, 2)
    pred = flow_extrapolation(clip[:, :3], 3, method="splat")
    truth = clip[:, 3:]
    inner = (..., slice(10, -10), slice(10, -10))
    assert float(psnr(pred[inner], truth[inner]).min()) > 30
    assert torch.isfinite(pred).all() and pred.abs().max() <= 1.0 + 1e-5  # no hole left empty: all of it is a picture
    assert torch.allclose(splat(clip[:, 0], torch.zeros(1, 2, 48, 48), clip[:, 1]), clip[:, 0], atol=1e-6)  # still: itself


def test_a_longer_velocity_baseline_measures_motion_under_a_pixel_a_frame():
    """bench.anchors' velocity over ``k`` frames: a pan of 1 pixel every 2 frames (the frames a whole-pixel rollout
    makes of half a pixel a frame) measures 0 between the last two frames and half a pixel a frame over 2."""
    from bench.anchors import ESTIMATORS, velocity_flow

    pan = _panned(3, 1)  # [1, 3, 3, S, S]: frames 0, 1, 2 at 0, 1, 2 pixels
    clip = torch.stack([pan[:, 0], pan[:, 1], pan[:, 1]], dim=1)  # moved once in the last two frames' span of 2
    dis = next(iter(ESTIMATORS.values()))
    one, two = velocity_flow(clip, dis, 1)[0, 0, 12:-12, 12:-12], velocity_flow(clip, dis, 2)[0, 0, 12:-12, 12:-12]
    assert abs(float(one.median())) < 0.1 and abs(float(two.median()) + 0.5) < 0.15


def test_softmax_splatting_draws_the_important_pixel_over_the_one_it_lands_on():
    """``splat``'s ``importance``: the disc that summation splatting blends half and half with the background at its
    leading edge (above) is drawn whole when its pixels are the more important ones; equal importance everywhere is
    summation splatting again, and the coverage test (``fill`` where nothing lands) is unchanged."""
    clip, centres = _disc_clip(8, 3.0)
    last = clip[:, 3]
    on_disc = ((last[:, 0] > 0.5) & (last[:, 1] < -0.5)).float()  # [1, S, S]
    velocity = torch.stack([3.0 * on_disc, torch.zeros_like(on_disc)], dim=1)  # [1, 2, S, S]
    fill = clip[:, 4]
    plain = splat(last, velocity, fill)
    assert torch.allclose(splat(last, velocity, fill, importance=torch.full_like(on_disc, 2.0)), plain, atol=1e-6)
    layered = splat(last, velocity, fill, importance=10.0 * on_disc)[0]  # [3, S, S]
    front = int(centres[4]) + 3  # the leading edge: all disc now, where summation gave half of each
    assert abs(float(layered[0, 24, front]) - 0.9) < 1e-3 and abs(float(plain[0, 0, 24, front]) - 0.9) > 0.1
    assert torch.allclose(layered, clip[0, 4], atol=1e-3)  # the disc moved whole: the true next frame
    assert not torch.isnan(splat(last, velocity, fill, importance=-1e4 * torch.ones_like(on_disc))).any()  # kept in range


def test_the_generators_exact_motion_moves_its_frames():
    """``procedural_motion``: the texture of frame ``f - 1`` warped by the exact flow is frame ``f`` away from the sprites
    (what DIS only estimates), and every pixel of a sprite's layer moved by the sprite's own move: frame ``f - 1`` read
    there is frame ``f``."""
    from msc.data.procedural import procedural_motion

    with pytest.raises(ValueError, match="needs the frame before it"):
        procedural_motion(TEST_SEED_OFFSET, 0)
    seeds = [TEST_SEED_OFFSET + i for i in range(4)]
    for seed in seeds:
        clip, sprites = procedural_clip(seed, 8, 64), procedural_sprites(seed, 8, 64)
        motion = procedural_motion(seed, 7, 64)
        flow, layer = motion["flow"][None], motion["layer"]  # [1, 2, S, S], [S, S]
        previous, last = clip[6:7], clip[7:8]
        # texture pixels far from every sprite in both frames (a sprite's anti-aliased edge is not texture)
        near = torch.zeros(64, 64, dtype=torch.bool)
        ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        for f in (6, 7):
            for (cx, cy), r in zip(sprites["centre"][f].tolist(), sprites["radius"].tolist()):
                near |= (xs - cx) ** 2 + (ys - cy) ** 2 <= (r * 1.5 + 2) ** 2
        texture = (~near)[4:-4, 4:-4]
        exact = (warp(previous, flow) - last).pow(2).mean(1)[0, 4:-4, 4:-4]  # [S-8, S-8]
        estimated = (warp(previous, backward_flow(previous, last, "dis")) - last).pow(2).mean(1)[0, 4:-4, 4:-4]
        assert texture.sum() > 500 and float(exact[texture].mean()) < 5e-6  # the resampling's own error
        assert 5 * float(exact[texture].mean()) < float(estimated[texture].mean())
        for i in range(len(sprites["radius"])):
            covered = layer == i + 1
            if covered.sum() >= 20 and float(sprites["visible"][7, i]) == 1.0:
                move = sprites["centre"][6, i] - sprites["centre"][7, i]
                assert torch.allclose(flow[0, :, covered], move[:, None].expand(-1, int(covered.sum())))
                moved = (warp(previous, flow) - last).pow(2).mean(1)[0][covered].mean()  # read where the flow says
                still = (previous - last).pow(2).mean(1)[0][covered].mean()
                assert moved < still / 2 and moved < 0.01  # the sprite was where its flow points


def test_the_anchors_ceiling_counts_what_constant_velocity_cannot_know():
    """bench.anchors' constant-velocity centres: 0 for a sprite that keeps its velocity, its distance from the truth
    for one that bounces; the ceiling's table states the bar beside the locator's own error."""
    from bench.anchors import CONTEXT, HORIZON, ceiling_table, constant_velocity_error

    frames = CONTEXT + HORIZON
    steady = torch.stack([torch.tensor([10.0 + 2 * t, 30.0]) for t in range(frames)])[:, None]  # [T, 1, 2]
    bounced = steady.clone()
    bounced[CONTEXT:, 0, 0] = bounced[CONTEXT - 1, 0, 0] - 2 * torch.arange(1.0, HORIZON + 1)  # turns back after the context
    visible = torch.ones(frames, 1)
    assert constant_velocity_error([{"centre": steady, "visible": visible}]) == 0.0
    expected = float(sum(4 * h for h in range(1, HORIZON + 1))) / HORIZON  # 2h ahead against 2h behind
    assert abs(constant_velocity_error([{"centre": bounced, "visible": visible}]) - expected) < 1e-5
    lines = ceiling_table({"copy_last": {"procedural": 18.5, "sprites": 9.0}, "constant_velocity": 2.4, "locator_floor": 1.5,
                           "ceiling": [{"anchor": "exact", "psnr_mean": 23.0, "motion_ratio": 1.05, "trajectory_error": 4.8}]})
    assert "| exact | 23.00 | 1.05 | 4.80 px |" in lines and "| copy the last frame | 18.50 | 0 | 9.00 px |" in lines
    assert "The sprite bar (4.50 px) against the locator's own error on the true frames, 1.50 px." in lines


def test_layered_splatting_draws_a_moving_object_over_a_still_background():
    """``splat_layered`` (the ``flow_splat_layered`` prior's anchor): where the disc moving over a still background
    lands, the flow-estimated extrapolation draws the disc, not the half-and-half blend of summation splatting, and
    its sprite error on the generator's held-out clips is lower than summation splatting's."""
    clip, centres = _disc_clip(8, 2.0)
    truth = clip[:, 4:]
    plain = extrapolate(clip[:, 2], clip[:, 3], range(1, 5), method="splat")
    layered = extrapolate(clip[:, 2], clip[:, 3], range(1, 5), method="splat_layered")
    red = lambda video: float(((video[..., 0, :, :] > 0.5) & (video[..., 1, :, :] < -0.5)).sum())  # red pixels
    assert red(layered) > red(plain) and abs(red(layered) - red(truth)) < abs(red(plain) - red(truth))
    seeds = [TEST_SEED_OFFSET + i for i in range(8)]
    clips = torch.stack([procedural_clip(s, 12, 64) for s in seeds])
    sprites = [procedural_sprites(s, 12, 64) for s in seeds]
    errors = {m: trajectory_error(extrapolate(clips[:, 6], clips[:, 7], range(1, 5), method=m), sprites, 8)
              for m in ("splat", "splat_layered")}
    assert errors["splat_layered"] < errors["splat"]
