"""The app's own queue: which runs are accepted (the queue limit, held under bursts), whose turn it is, and what is
ahead of a waiting run by this app's estimates.

Gradio checks its queue's `max_size` before it awaits an event's validator and adds the event after, so requests
that arrive together all pass that check (measured: 10 simultaneous requests, a queue of 3, all 10 accepted).
`Admissions` counts under a lock, in the validator itself: a request is admitted only while fewer than
`max_waiting` admitted runs wait to start.

Runs then wait here, not in Gradio's queue (app.py lets Gradio start every admitted run at once): a run `join`s,
claiming the oldest admission not yet claimed (Gradio starts events in the order they were queued), waits for its
`turn` (first in, first out, `slots` runs at a time) and is told meanwhile what is ahead of it (`ahead`: the
runs before it and their estimated seconds, the running ones' less what they have already run), which is what
waiting visitors read instead of Gradio's own ETA (an average over past events, blind to sizes and steps). An
admission that no run claims (the visitor left before Gradio started it) expires once it is long overdue.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .errors import DemoError
from .results import Waiting, format_seconds

UNKNOWN_RUN_S = 600.0  # how long a run without an estimate is assumed to take, for expiry only


@dataclass(eq=False)
class Admission:
    admitted_at: float
    seconds: float | None  # the run's estimate
    expires_at: float | None  # None once a run has claimed it (it leaves when that run ends)
    claimed: bool = False
    started_at: float | None = None  # when its turn came

    @property
    def running(self) -> bool:
        return self.started_at is not None


class Admissions:
    def __init__(self, max_waiting: int, slots: int = 1, clock=time.monotonic):
        self.max_waiting = max_waiting
        self.slots = max(1, slots)
        self.clock = clock
        self._entries: list[Admission] = []  # in queue order
        self._changed = threading.Condition()

    # -- the validator ----------------------------------------------------------------------------------------
    def admit(self, seconds: float | None) -> Admission:
        """Count a run in, or raise DemoError saying the queue is full and when to try again."""
        with self._changed:
            now = self._expire()
            waiting = [e for e in self._entries if not e.running]
            if len(waiting) >= self.max_waiting:
                running = len(self._entries) - len(waiting)
                ahead = sum(e.seconds or 0.0 for e in self._entries)
                eta = f" about {format_seconds(ahead)}" if ahead else " a little while"
                raise DemoError(
                    f"The queue is full: {len(waiting)} runs are waiting and {running} running (L2P_MAX_QUEUE="
                    f"{self.max_waiting}). Try again in{eta}."
                )
            entry = Admission(now, seconds, expires_at=now + 2 * (self._seconds_ahead(now) + (seconds or UNKNOWN_RUN_S)) + 60.0)
            self._entries.append(entry)
            return entry

    # -- the run ----------------------------------------------------------------------------------------------
    def join(self, seconds: float | None) -> Admission:
        """The run arriving now takes its place: the oldest admission no run has claimed, else (a run that was
        never admitted, such as a cached example) a new place at the end."""
        with self._changed:
            now = self._expire()
            entry = next((e for e in self._entries if not e.claimed), None)
            if entry is None:
                entry = Admission(now, seconds, expires_at=None)
                self._entries.append(entry)
            entry.claimed, entry.seconds, entry.expires_at = True, seconds, None
            self._changed.notify_all()
            return entry

    def turn(self, entry: Admission, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds (None: as long as it takes) for `entry`'s turn; True once it runs. (Waiting
        is on real time; `clock` dates the entries.)"""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not entry.running:
                if self._is_turn(entry):
                    entry.started_at = self.clock()
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def ahead(self, entry: Admission) -> Waiting:
        """What is ahead of a waiting run: every run before it, and the estimated seconds until its turn."""
        with self._changed:
            now = self.clock()
            before = self._entries[: self._entries.index(entry)] if entry in self._entries else []
            known = [self._remaining(e, now) for e in before if e.seconds is not None]
            unknown = len(before) - len(known)
            return Waiting(len(before), sum(known) / self.slots if known else None, unknown)

    def finish(self, entry: Admission | None) -> None:
        with self._changed:
            if entry in self._entries:
                self._entries.remove(entry)
            self._changed.notify_all()

    @property
    def waiting(self) -> int:
        with self._changed:
            return sum(not e.running for e in self._entries)

    # -- inside the lock --------------------------------------------------------------------------------------
    def _is_turn(self, entry: Admission) -> bool:
        if sum(e.running for e in self._entries) >= self.slots:
            return False
        first = next((e for e in self._entries if not e.running and e.claimed), None)
        return first is entry

    def _remaining(self, entry: Admission, now: float) -> float:
        if entry.running:
            return max(0.0, entry.seconds - (now - entry.started_at))
        return entry.seconds

    def _seconds_ahead(self, now: float) -> float:
        return sum(self._remaining(e, now) for e in self._entries if e.seconds is not None)

    def _expire(self) -> float:
        now = self.clock()
        kept = [e for e in self._entries if e.expires_at is None or e.expires_at > now]
        if len(kept) != len(self._entries):
            self._entries = kept
            self._changed.notify_all()
        return now
