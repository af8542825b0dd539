"""Test-wide settings: offline, no analytics, deterministic threads."""

import os
import warnings

from bench import CHROMIUM, CHROMIUM_FLAGS, app_server
from msc.environment import OFFLINE, go_offline  # noqa: F401  (OFFLINE: for the tests' own subprocesses)

go_offline()  # before any test imports gradio or huggingface_hub

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


# ---------------------------------------------------------------- the app as a server (end-to-end tests)


def running_app(log_path: str, *args: str):
    """``python app.py --port P *args`` until the generator is closed (:func:`bench.app_server`): yields its URL once
    it answers (90 s at most; the test fails with the server's log otherwise), then stops it."""
    try:
        with app_server(*args, wait_s=90, log_path=log_path) as url:
            yield url
    except RuntimeError as err:
        pytest.fail(str(err))


@pytest.fixture
def browser():
    """A headless Chromium (Debian's, driven by Playwright) for one test; skipped, saying why, where Chromium or
    Playwright is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium; .ci/run does)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()
