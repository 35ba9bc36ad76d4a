"""Running one request at a time on a worker thread, streaming what it emits, stopping it when asked, and turning
its failures into messages for the user."""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from typing import Callable, Iterator

import torch

from ..device import device_label, release_memory
from .errors import Cancelled, DemoError, first_line
from .results import format_bytes

log = logging.getLogger("l2p.demo")

OUT_OF_MEMORY_PHRASES = ("out of memory", "can't allocate memory", "cannot allocate memory")


def stream(work: Callable, lock: threading.Lock, cancel: threading.Event | None,
           explain: Callable[[BaseException], DemoError]) -> Iterator:
    """Run `work(emit, cancel)` on a worker thread holding `lock`, and yield what it emits, then its result.

    Closing this generator (Gradio does when a run is cancelled or the page goes away) sets `cancel`, which the
    pipelines' step callbacks turn into an interrupt at the end of the current step. The close does not wait for
    that (Gradio closes generators on its event loop); the worker keeps the lock until it has stopped, so the next
    run starts after it. Failures come out as `explain(error)` (a DemoError with a message for the user), after
    the memory they held is released.
    """
    cancel = cancel or threading.Event()
    events: queue.Queue = queue.Queue()
    done = object()

    def target():
        try:
            with lock, torch.inference_mode():  # grad mode is per thread
                if cancel.is_set():  # stopped while waiting for the previous run
                    raise Cancelled()
                result = work(events.put, cancel)
            events.put((done, result, None))
        except BaseException as error:  # noqa: BLE001 - every failure goes back to the user as a message
            # A failed run's tensors stay referenced from its traceback's frames: clear their locals (the
            # traceback itself is kept for the log) and collect. A run that succeeded freed its tensors by
            # reference counting, and a full collection (0.1-0.3 s with Gradio and torch loaded) would be
            # pure overhead on every request.
            traceback.clear_frames(error.__traceback__)
            release_memory()
            events.put((done, None, error))

    worker = threading.Thread(target=target, name="l2p-run", daemon=True)
    worker.start()
    try:
        while True:
            event = events.get()
            if isinstance(event, tuple) and len(event) == 3 and event[0] is done:
                worker.join()
                _, result, error = event
                if isinstance(error, Cancelled):
                    return
                if error is not None:
                    raise explain(error) from error
                yield result
                return
            yield event
    finally:
        cancel.set()


def explain_failure(error: BaseException, size: str, estimate, device: torch.device) -> DemoError:
    """A run's failure as a message for the user: out of memory (with what was expected), or what went wrong."""
    if isinstance(error, DemoError):
        return error
    text = str(error)
    out_of_memory = isinstance(error, (torch.OutOfMemoryError, MemoryError)) or any(
        phrase in text.lower() for phrase in OUT_OF_MEMORY_PHRASES
    )
    if out_of_memory:
        expected = f" (the estimate was {format_bytes(estimate.peak_memory_bytes)})" if estimate is not None else ""
        return DemoError(f"Out of memory at {size} on {device_label(device)}{expected}. The memory was released "
                         f"and the app is still running: try a smaller preset or fewer steps.")
    log.error("run failed:\n%s", "".join(traceback.format_exception(error)))
    return DemoError(f"The run failed ({type(error).__name__}: {first_line(error)}). The app is still running; "
                     f"try again or change the settings.")
