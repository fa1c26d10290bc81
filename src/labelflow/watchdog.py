"""Bounds enforced from outside a call: a worker that hangs ends, and is restarted.

librdkafka does not honour the timeout of its transactional calls in every state (seen: all
workers blocked in ``commit_transaction`` for minutes after a broker restart), and a Python
thread cannot interrupt a C call. So a worker arms a deadline around every call that could
hang; a thread watching the deadlines ends the whole process with :data:`EXIT_HUNG` when one
passes. Its supervisor restarts it, the new instance's ``init_transactions`` fences the old
transactional id (aborting whatever the dead one had open), and the uncommitted batch is
redone — the same path as a ``kill -9``, which the exactly-once tests already prove safe.

The same thread notices a worker orphaned by its supervisor (the parent process changed) and
asks it to stop.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

EXIT_HUNG = 75
"""Exit code of a worker ended by its watchdog (EX_TEMPFAIL: run it again)."""

CHECK_INTERVAL_S = 0.25


class Watchdog:
    """Watches deadlines on a daemon thread; see the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        parent_pid: int | None = None,
        on_orphaned: Callable[[], None] | None = None,
        exit: Callable[[int], None] = os._exit,
    ) -> None:
        self.name = name
        self.parent_pid = parent_pid
        self.on_orphaned = on_orphaned
        self._exit = exit
        self._deadlines: dict[int, tuple[float, str]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._orphaned = False
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._stopped = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stopped.set()

    @contextmanager
    def bound(self, seconds: float, what: str) -> Iterator[None]:
        """End the process if the block inside takes longer than ``seconds``."""
        token = self.arm(seconds, what)
        try:
            yield
        finally:
            with self._lock:
                self._deadlines.pop(token, None)

    def arm(self, seconds: float, what: str) -> int:
        """A deadline that stays armed (a shutdown's bound); returns its token."""
        token = next(self._ids)
        with self._lock:
            self._deadlines[token] = (time.monotonic() + seconds, what)
        return token

    def _run(self) -> None:
        while not self._stopped.wait(CHECK_INTERVAL_S):
            now = time.monotonic()
            with self._lock:
                expired = [what for at, what in self._deadlines.values() if at <= now]
            if expired:
                log.critical(
                    "a call outlived its bound; ending the process so that it is restarted",
                    extra={"worker": self.name, "call": expired[0], "exit_code": EXIT_HUNG},
                )
                for handler in logging.getLogger().handlers:
                    handler.flush()
                self._exit(EXIT_HUNG)
                return
            if (
                self.parent_pid is not None
                and not self._orphaned
                and os.getppid() != self.parent_pid
            ):
                self._orphaned = True
                log.warning("supervisor is gone; stopping", extra={"worker": self.name})
                if self.on_orphaned is not None:
                    self.on_orphaned()
