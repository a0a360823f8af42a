"""Open a file in headless Chromium, as a reader would (imported as ``cli_helpers`` is).

Playwright drives the system's Chromium (``apt-get install chromium``); nothing is
downloaded. Tests that need it skip only when Playwright or a Chromium binary is absent.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    """The path of a Chromium binary on PATH, or None."""
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def _playwright_missing() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return True
    return False


needs_browser = pytest.mark.skipif(
    chromium() is None or _playwright_missing(),
    reason=f"needs playwright and one of {', '.join(BROWSERS)} on PATH",
)


def render(path: Path, *, width: int = 1200, height: int = 900) -> dict:
    """Load ``path`` from disk; return what it asked for, said and looked like.

    Returns a dict with ``requests`` (every URL the page requested, the file itself
    included), ``console`` ((type, text) of each console message), ``errors`` (uncaught
    page errors, failed requests) and ``screenshot`` (the full page, an RGB array).
    """
    from PIL import Image
    from playwright.sync_api import sync_playwright

    # Chromium's sandbox refuses to start as root (containers, CI).
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    seen: dict = {"requests": [], "console": [], "errors": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=args)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("request", lambda r: seen["requests"].append(r.url))
            page.on("requestfailed", lambda r: seen["errors"].append(f"failed: {r.url}"))
            page.on("console", lambda m: seen["console"].append((m.type, m.text)))
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.goto(Path(path).resolve().as_uri(), wait_until="load")
            png = page.screenshot(full_page=True)
        finally:
            browser.close()
    seen["screenshot"] = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return seen
