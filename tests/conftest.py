"""Test-wide settings: offline, no analytics, deterministic threads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import warnings  # noqa: E402

# NATTEN's CPU path runs flex attention unfused and says so on every call.
warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
warnings.filterwarnings("ignore", message=".*return_lse is deprecated.*")


import pytest  # noqa: E402
import torch  # noqa: E402


def perturbed_tiny(**overrides):
    """The ``tiny`` config with its weights perturbed away from the zero-initialised adaLN / gates,
    so every branch and gate contributes (an untrained model would output zeros)."""
    from msc.model import MSCModel, config_from_name

    torch.manual_seed(0)
    m = MSCModel(config_from_name("tiny", **overrides))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m.eval()


@pytest.fixture(scope="module")
def tiny_model():
    return perturbed_tiny()


@pytest.fixture(scope="module")
def tiny_prior_model():
    """As ``tiny_model``, with the noise of every frame centred on the previous chunk's last frame."""
    return perturbed_tiny(prior="previous_frame")


def random_context(frames: int = 3, seed: int = 0) -> torch.Tensor:
    """``[1, frames, 3, 16, 16]`` uniform in [-1, 1] (frames for the tiny model)."""
    return torch.rand(1, frames, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1
