"""How the demo fails: with a message for the person using it."""

from __future__ import annotations


class DemoError(Exception):
    """A message for the person using the demo (bad input, out of memory, a failed run)."""


class MissingAssets(SystemExit):
    """Neither configured nor embedded models could be loaded; the message says how to build them."""


class Cancelled(Exception):
    """The run was stopped by the user."""


def first_line(error: BaseException, limit: int = 400) -> str:
    """The first line of an error's message, shortened to `limit` characters."""
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
