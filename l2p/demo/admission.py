"""How many runs the app has accepted and not yet finished: the queue limit, held under bursts.

Gradio checks its queue's `max_size` before it awaits an event's validator and adds the event after, so requests
that arrive together all pass that check (measured: 10 simultaneous requests, a queue of 3, all 10 accepted).
`Admissions` counts under a lock, in the validator itself: a request is admitted only while fewer than
`max_waiting` admitted runs wait to start. Runs start in the order they were admitted (the queue is first in,
first out), so the run that starts claims the oldest waiting admission and releases it when it ends. An
admission whose run never starts (the visitor left while it waited) expires once it is long overdue.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .errors import DemoError
from .results import format_seconds

UNKNOWN_RUN_S = 600.0  # how long a run without an estimate is assumed to take, for expiry only


@dataclass
class Admission:
    admitted_at: float
    seconds: float | None  # the run's estimate
    expires_at: float
    started: bool = False


class Admissions:
    def __init__(self, max_waiting: int, clock=time.monotonic):
        self.max_waiting = max_waiting
        self.clock = clock
        self._entries: list[Admission] = []
        self._lock = threading.Lock()

    def admit(self, seconds: float | None) -> Admission:
        """Count a run in, or raise DemoError saying the queue is full and when to try again."""
        with self._lock:
            now = self.clock()
            self._entries = [e for e in self._entries if e.started or e.expires_at > now]
            waiting = [e for e in self._entries if not e.started]
            ahead = sum(e.seconds or 0.0 for e in self._entries)
            if len(waiting) >= self.max_waiting:
                running = len(self._entries) - len(waiting)
                eta = f" about {format_seconds(ahead)}" if ahead else " a little while"
                raise DemoError(
                    f"The queue is full: {len(waiting)} runs are waiting and {running} running (L2P_MAX_QUEUE="
                    f"{self.max_waiting}). Try again in{eta}."
                )
            own = seconds if seconds is not None else UNKNOWN_RUN_S
            entry = Admission(now, seconds, expires_at=now + 2 * (ahead + own) + 60.0)
            self._entries.append(entry)
            return entry

    def start(self) -> Admission | None:
        """The run starting now claims the oldest waiting admission (None for runs that were never admitted,
        such as cached examples)."""
        with self._lock:
            entry = next((e for e in self._entries if not e.started), None)
            if entry is not None:
                entry.started = True
            return entry

    def finish(self, entry: Admission | None) -> None:
        with self._lock:
            if entry in self._entries:
                self._entries.remove(entry)

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(not e.started for e in self._entries)
