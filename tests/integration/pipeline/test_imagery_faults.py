"""A tile server that stalls and then fails before it serves: samples still arrive, through
the retry topics, and nothing is dead-lettered.

The server is real HTTP on 127.0.0.1, started by the test: for each tile, the first request
gets no answer for longer than the workers' imagery timeout, the second a 503, the third the
tile. Each record therefore needs exactly two retries, within the three configured.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from labelflow.catalog.blobs import BlobStore
from labelflow.imagery.synthetic import render_scene
from labelflow.imagery.xyz import TILE_SIZE, tile_bounds
from labelflow.kafka.topics import retry_topic
from labelflow.model import AnnotationEvent, Feature, ImageRef, Status
from labelflow.sources.base import polygon
from labelflow.sources.synthetic import ExpectedTask
from pipeline_support import DEAD_LETTER, StartPipeline, catalog_problems, failure

pytestmark = pytest.mark.integration

IMAGERY_TIMEOUT_S = 0.5
STALL_S = 2.0
"""Well past the timeout: the worker must give up on the request, not just see it slow."""
FAULTS = ("stall", "503")
"""What each tile's first requests get, in order; later requests get the tile."""
ZOOM = 18
TILES = [(131_000 + i, 90_000 + i) for i in range(6)]
TIMEOUT_S = 60.0


def _png(pixels: np.ndarray) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # tiles are placed by URL
        with MemoryFile() as memfile:
            bands, height, width = pixels.shape
            with memfile.open(
                driver="PNG", count=bands, height=height, width=width, dtype=pixels.dtype.name
            ) as dst:
                dst.write(pixels)
            return bytes(memfile.read())


@dataclass
class FlakyTileServer:
    """Serves ``tiles`` (``(x, y)`` → pixels) at zoom ``ZOOM``, each after its ``FAULTS``."""

    tiles: dict[tuple[int, int], np.ndarray]
    requests: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        encoded = {f"/{ZOOM}/{x}/{y}.png": _png(p) for (x, y), p in self.tiles.items()}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server.lock:
                    seen = server.requests[self.path]
                    server.requests[self.path] += 1
                fault = FAULTS[seen] if seen < len(FAULTS) else None
                if fault == "stall":
                    time.sleep(STALL_S)
                    return  # the client is gone; the connection just closes
                body = encoded.get(self.path)
                if fault == "503" or body is None:
                    self.send_error(503 if fault else 404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def tile_server() -> Iterator[tuple[FlakyTileServer, str]]:
    """The flaky server and its URL template."""
    flaky = FlakyTileServer({(x, y): render_scene(f"tile-{x}-{y}", 256, 256) for x, y in TILES})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), flaky.handler())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield flaky, f"http://127.0.0.1:{httpd.server_address[1]}/{{z}}/{{x}}/{{y}}.png"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _event(index: int, x: int, y: int, url: str) -> AnnotationEvent:
    """One task labelled on exactly one tile."""
    return AnnotationEvent(
        source="xyz-test",
        task_id=f"tile-{index}",
        revision=1,
        status=Status.SUBMITTED,
        features=[
            Feature(label="building", geometry=polygon([[(20, 20), (90, 20), (90, 70), (20, 70)]]))
        ],
        image=ImageRef(
            provider="xyz",
            uri=url,
            bounds=tile_bounds(x, y, ZOOM),
            bounds_crs="EPSG:3857",
            zoom=ZOOM,
            width=TILE_SIZE,
            height=TILE_SIZE,
        ),
    )


def test_samples_arrive_through_retries_when_tiles_time_out_and_fail(
    start_pipeline: StartPipeline, tile_server: tuple[FlakyTileServer, str]
) -> None:
    server, url = tile_server
    pipeline = start_pipeline(env={"LABELFLOW_IMAGERY_TIMEOUT_S": str(IMAGERY_TIMEOUT_S)})
    events = [_event(i, x, y, url) for i, (x, y) in enumerate(TILES)]
    retries = [pipeline.collector(retry_topic(level)) for level in (1, 2, 3)]
    dead_letters = pipeline.collector(DEAD_LETTER)

    for event in events:
        pipeline.publish_raw(event.task_id, event.model_dump_json().encode())
    pipeline.flush()

    expected = {e.task_id: ExpectedTask(task_id=e.task_id, revision=1, sample=True) for e in events}
    pipeline.eventually(
        lambda: catalog_problems(pipeline.catalog, expected), TIMEOUT_S, "every tile's sample"
    )

    # Each record failed once per fault, in order, and went on to the next retry level.
    first, second, third = (r.drain() for r in retries)
    assert sorted((m.key(), failure(m).code, failure(m).attempts) for m in first) == sorted(
        (e.task_id.encode(), "imagery.timeout", 1) for e in events
    )
    assert sorted((m.key(), failure(m).code, failure(m).attempts) for m in second) == sorted(
        (e.task_id.encode(), "imagery.unavailable", 2) for e in events
    )
    assert third == []
    assert dead_letters.drain() == []
    assert all(failure(m).stage == "materialize" for m in first + second)
    assert all(server.requests[f"/{ZOOM}/{x}/{y}.png"] >= len(FAULTS) + 1 for x, y in TILES)

    # What was stored is the tile that was finally served.
    blobs = BlobStore.from_settings(pipeline.settings)
    for event, tile in zip(events, TILES, strict=True):
        sample = pipeline.catalog.get(event.task_id)
        assert sample is not None
        with MemoryFile(blobs.get(sample.image_hash)) as stored, stored.open() as src:
            np.testing.assert_array_equal(src.read(), server.tiles[tile])
