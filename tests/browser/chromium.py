"""Debian's Chromium driven by Playwright, with no downloads: `playwright install` is never needed."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def missing_reason() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (CI installs Debian's chromium with apt)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright; no `playwright install` needed)"
    return None


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    """A Playwright page in a fresh Chromium profile that is deleted afterwards."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="l2p-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), args=ARGS, headless=True,
                viewport={"width": width, "height": height},
            )
            try:
                yield context.new_page()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def enter_number(field, value: str, tries: int = 3) -> None:
    """Type `value` into a Gradio number box and press Enter, until the box holds it. On a loaded machine the page
    can re-render a slider's box with its old value just after the typing (seen once right after the Settings
    accordion opened), so the typing is repeated; the box must hold the value in the end."""
    from playwright.sync_api import expect

    for attempt in range(tries):
        field.fill(value)
        field.press("Enter")
        try:
            expect(field).to_have_value(value, timeout=3000)
            return
        except AssertionError:
            if attempt == tries - 1:
                raise
