"""Stopping labelflow processes the same way everywhere: signals, a second Ctrl-C, orphans.

- :func:`stop_on_signals` (the CLI's long-running commands: ``demo``, ``up``): the first
  SIGTERM, SIGINT or SIGHUP asks for a graceful stop; a second one stops at once. SIGHUP is
  included because a closed terminal sends it, and a demo that ignored it left its broker and
  workers running as orphans that later shared consumer groups with the next demo.
- :class:`SignalThread` (stage workers): the same, but the signals are received on a thread
  of their own with ``sigwait``. A worker's main thread can sit inside a librdkafka call for
  many seconds, and Python runs signal handlers only on the main thread between bytecodes: a
  handler there would never run while the call hangs.
- :func:`die_with_parent`: a worker asks the kernel for SIGTERM when its supervisor dies, so
  a ``kill -9`` of ``labelflow up`` leaves no worker behind.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_PR_SET_PDEATHSIG = 1


class ForcedStop(KeyboardInterrupt):
    """A second stop signal: give up on a graceful stop, clean up the fastest way."""


@contextmanager
def stop_on_signals(
    stop: Callable[[], None], force: Callable[[], None] | None = None
) -> Iterator[None]:
    """While inside, the first stop signal calls ``stop``; the second calls ``force``, or
    raises :class:`ForcedStop` in the main thread when none is given.

    A flag the main loop checks lets a process stop in order (a batch produced but not
    committed, workers stopped but not the broker). Only the main thread can install signal
    handlers, so elsewhere this changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = 0

    def handler(signum: int, _frame: object) -> None:
        nonlocal received
        received += 1
        if received == 1:
            log.info("stop requested (%s); again to stop at once", signal.Signals(signum).name)
            stop()
        elif force is not None:
            force()
        else:
            raise ForcedStop

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class SignalThread:
    """Receives stop signals on a dedicated thread: ``on_first`` at the first, ``on_second``
    at any later one.

    :meth:`start` runs on the main thread before the Kafka clients start their threads: it
    blocks the signals for the calling thread, threads started later inherit that mask, and
    ``sigwait`` here takes them. Threads that already exist (a BLAS pool started by importing
    numpy) may still be handed a signal by the kernel; a Python handler catches those, so the
    default action never kills the worker mid-batch.
    """

    def __init__(self, on_first: Callable[[int], None], on_second: Callable[[int], None]) -> None:
        self.on_first = on_first
        self.on_second = on_second
        self._received = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="signals", daemon=True)

    def start(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda signum, _frame: self._dispatch(signum))
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._dispatch(signal.sigwait(STOP_SIGNALS))

    def _dispatch(self, signum: int) -> None:
        with self._lock:
            self._received += 1
            first = self._received == 1
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        (self.on_first if first else self.on_second)(signum)


def set_parent_death_signal() -> bool:
    """Ask the kernel for SIGTERM when the parent process dies (Linux; False elsewhere).

    Safe as a ``preexec_fn`` between fork and exec: libc is loaded once at import, so the
    child only makes the system call (loading a library there could deadlock).
    """
    if _LIBC is None:
        return False
    return _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0


def die_with_parent(expected_parent: int | None) -> bool:
    """Be stopped with the parent; returns whether the parent is still ``expected_parent``
    afterwards (it may have died before the request took effect)."""
    if not set_parent_death_signal():
        log.warning("cannot ask to be stopped with the parent process")
    return expected_parent is None or os.getppid() == expected_parent


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()
