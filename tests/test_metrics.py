"""PSNR / SSIM / motion against scikit-image, which we did not write."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from msc.data import procedural_clip
from msc.metrics import motion, psnr, ssim


def _pair():
    a = procedural_clip(1, 3, 32)  # [3, 3, 32, 32] in [-1, 1]
    b = (a + 0.2 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    return a, b


def _unit(x):
    return ((x.numpy().astype(np.float64) + 1) / 2)


def test_psnr_matches_scikit_image():
    a, b = _pair()
    ours = psnr(b, a)
    for i in range(3):
        ref = peak_signal_noise_ratio(_unit(a[i]), _unit(b[i]), data_range=1.0)
        assert ours[i].item() == pytest.approx(ref, abs=1e-3)


def test_ssim_matches_scikit_image():
    a, b = _pair()
    ours = ssim(b, a)
    for i in range(3):
        ref = structural_similarity(_unit(a[i]), _unit(b[i]), data_range=1.0, channel_axis=0,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert ours[i].item() == pytest.approx(ref, abs=2e-3)


def test_identical_frames_score_perfectly_and_keep_leading_dims():
    a = procedural_clip(2, 4, 16)[None]  # [1, 4, 3, 16, 16]
    assert psnr(a, a).shape == (1, 4) and (psnr(a, a) == 100).all()
    assert torch.allclose(ssim(a, a), torch.ones(1, 4), atol=1e-5)
    with pytest.raises(ValueError, match="at least 11"):
        ssim(a[..., :8, :8], a[..., :8, :8])


def test_motion_is_zero_for_a_still_video_and_positive_for_a_moving_one():
    clip = procedural_clip(3, 5, 16)
    still = clip[:1].expand(5, -1, -1, -1)
    assert motion(still).abs().max() == 0
    assert motion(clip).shape == (4,) and motion(clip).min() > 0
