"""The README's picture of the app, ``docs/app.png``: ``python -m release.screenshot`` (about a minute; needs Debian's
Chromium and Playwright's Python package, as the browser tests do).

``python app.py`` with the bundled weights extends a held-out real clip (``assets/heldout_real_0.mp4``) by 16 frames
at the default settings in a headless Chromium; the page is captured once the generated video plays.
"""

from __future__ import annotations

import argparse
import os

from bench import CHROMIUM, CHROMIUM_FLAGS, ROOT, app_server

CLIP = os.path.join(ROOT, "assets", "heldout_real_0.mp4")


def screenshot(out: str, clip: str = CLIP, weights: str = os.path.join(ROOT, "weights")) -> str:
    from playwright.sync_api import sync_playwright

    with app_server("--weights", weights) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url, wait_until="load")
            page.get_by_role("button", name="Generate from nothing").wait_for(timeout=60_000)
            page.locator("input[type=file]").first.set_input_files(clip)
            page.get_by_text("8 context frames at").wait_for(timeout=60_000)
            page.get_by_role("button", name="Extend the clip").click()
            page.get_by_text("Generated 16 frames after 8 context frames").wait_for(timeout=120_000)
            video = page.locator("video").nth(1)
            page.wait_for_function("v => v.readyState >= 2 && v.duration > 0", arg=video.element_handle(), timeout=60_000)
            video.evaluate("v => { v.muted = true; v.currentTime = v.duration * 0.8; }")  # a generated frame shows
            page.wait_for_function("v => !v.seeking", arg=video.element_handle(), timeout=30_000)
            page.screenshot(path=out, full_page=False)
        finally:
            browser.close()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "app.png"))
    p.add_argument("--weights", default=os.path.join(ROOT, "weights"))
    args = p.parse_args(argv)
    print(screenshot(args.out, weights=args.weights))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
