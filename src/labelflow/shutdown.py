"""Graceful stop on SIGTERM / SIGINT, the same way in every long-running labelflow process."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT call ``stop`` instead of interrupting the process.

    An interrupt could land between two steps of a shutdown (a batch produced but not
    committed, workers stopped but not the broker); a flag the main loop checks lets it stop
    in order. Only the main thread can handle signals, so elsewhere this changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = lambda signum, frame: stop()  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
