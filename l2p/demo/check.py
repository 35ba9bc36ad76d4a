"""The start-up check (`python app.py --check`): load what the configuration names, exactly as the app does, print
what would be served, and exit: 0 when served as configured, 3 when served with a notice (a fallback, named in
it), 1 with one line on a mistake in the configuration itself. It builds no page and never imports Gradio, which
is half of the app's start-up time."""

from __future__ import annotations

import logging

from .config import DemoConfig
from .service import Demo

SERVED_WITH_NOTICE = 3


def configure_logging() -> None:
    """The app's log format; the demo's own notices (fallbacks, estimates) at INFO."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("l2p").setLevel(logging.INFO)


def check(environ=None) -> int:
    """Start the demo's logic from the configuration in `environ` (default: the process's), print `name: value`
    lines of what is served, and return the exit code."""
    configure_logging()
    demo = Demo.start(DemoConfig.load(environ))
    for name, value in demo.describe().items():
        print(f"{name}: {value}")
    return SERVED_WITH_NOTICE if demo.models.notice else 0
