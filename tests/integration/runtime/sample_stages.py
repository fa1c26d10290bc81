"""Stages the runtime tests run in real worker processes (``labelflow run sample_stages:first``).

Behaviour is steered per key, so one input topic can mix records that succeed, fail
transiently (``flaky*``: twice, then succeed; ``doomed*``: always) and fail permanently while a
control file exists (``bad*``: removing the file is "fixing the cause"); ``stall*`` hangs
once for ``LF_TEST_STALL_S`` while the control file ``stall`` exists.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel

from labelflow.events import register
from labelflow.stage import Output, PermanentError, Record, Stage, TransientError

CONTROL_DIR = Path(os.environ.get("LF_TEST_CONTROL_DIR", "."))
DELAY_S = float(os.environ.get("LF_TEST_DELAY_MS", "0")) / 1000
STALL_S = float(os.environ.get("LF_TEST_STALL_S", "0"))


@register("test.item", 1)
class Item(BaseModel):
    key: str
    seq: int
    path: str = ""
    attempt: int = 0


def _step(mark: str, output: str) -> Callable[[Record], Iterator[Output]]:
    def process(record: Record) -> Iterator[Output]:
        item = record.event()
        assert isinstance(item, Item)
        if DELAY_S:
            time.sleep(DELAY_S)
        stall = CONTROL_DIR / "stall"
        if item.key.startswith("stall") and stall.exists():
            stall.unlink()  # once: the redo after the broker's abort goes through
            time.sleep(STALL_S)
        if item.key.startswith("flaky") and record.attempt < 2:
            raise TransientError("test.flaky", f"{item.key} fails on attempt {record.attempt}")
        if item.key.startswith("doomed"):
            raise TransientError("test.doomed", f"{item.key} always fails")
        if item.key.startswith("bad") and (CONTROL_DIR / "broken").exists():
            raise PermanentError("test.broken", f"{item.key} cannot be processed while broken")
        update = {"path": item.path + mark, "attempt": record.attempt}
        yield Output(output, item.model_copy(update=update), key=item.key)

    return process


first = Stage("first", inputs=("in",), outputs=("mid",), process=_step("a", "mid"))
second = Stage("second", inputs=("mid",), outputs=("out",), process=_step("b", "out"))
