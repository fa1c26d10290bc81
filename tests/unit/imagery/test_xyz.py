"""XYZ tiles: tile math, stitching against a real local HTTP tile server, classified errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds

from labelflow.imagery.base import ImageryError
from labelflow.imagery.xyz import (
    MERCATOR_HALF_WORLD,
    TILE_SIZE,
    XyzProvider,
    pixel_window,
    resolution,
    tile_bounds,
)
from labelflow.model import ImageRef
from support import free_port

ZOOM = 16
TILE_X, TILE_Y = 34_000, 22_000


def test_tile_math_round_trips() -> None:
    assert resolution(0) == pytest.approx(156_543.03392804097)
    assert tile_bounds(0, 0, 0) == pytest.approx(
        (-MERCATOR_HALF_WORLD,) * 2 + (MERCATOR_HALF_WORLD,) * 2
    )
    bounds = tile_bounds(TILE_X, TILE_Y, ZOOM)
    col0, row0 = TILE_X * TILE_SIZE, TILE_Y * TILE_SIZE
    assert pixel_window(bounds, ZOOM) == (col0, row0, col0 + TILE_SIZE, row0 + TILE_SIZE)
    assert pixel_window(bounds, ZOOM + 1) == (2 * col0, 2 * row0, 2 * col0 + 512, 2 * row0 + 512)


def tile_png(x: int, y: int) -> bytes:
    """Band 1/2 encode the global pixel column/row (mod 251), so stitching is checkable."""
    cols = (x * TILE_SIZE + np.arange(TILE_SIZE)) % 251
    rows = (y * TILE_SIZE + np.arange(TILE_SIZE)) % 251
    pixels = np.stack(
        [
            np.broadcast_to(cols, (TILE_SIZE, TILE_SIZE)),
            np.broadcast_to(rows[:, None], (TILE_SIZE, TILE_SIZE)),
            np.full((TILE_SIZE, TILE_SIZE), 100),
            np.full((TILE_SIZE, TILE_SIZE), 255),
        ]
    ).astype(np.uint8)
    with MemoryFile() as memfile:
        with memfile.open(
            driver="PNG", width=TILE_SIZE, height=TILE_SIZE, count=4, dtype="uint8"
        ) as dst:
            dst.write(pixels)
        return bytes(memfile.read())


BROKEN = {
    "html": b"<html>not a tile</html>",  # a login or error page served with 200
    "corrupt": b"\x89PNG\r\n\x1a\n" + bytes(64),  # a PNG whose header is broken
}


class TileServer(ThreadingHTTPServer):
    release: threading.Event


class TileHandler(BaseHTTPRequestHandler):
    """``/tiles/z/x/y.png`` serves tiles; ``/slow``, ``/error``, ``/gone``, ``/html`` and
    ``/corrupt`` misbehave the way real tile servers do."""

    server: TileServer

    def do_GET(self) -> None:
        kind, *zxy = self.path.strip("/").removesuffix(".png").split("/")
        if kind == "slow":
            self.server.release.wait(timeout=10)  # longer than the client's timeout
        if kind == "error":
            self.send_error(503)
        elif kind == "gone":
            self.send_error(404)
        else:
            body = BROKEN.get(kind) or tile_png(*map(int, zxy[1:]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    server = TileServer(("127.0.0.1", 0), TileHandler)
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_chip_spanning_four_tiles_is_stitched_on_the_mercator_grid(server_url: str) -> None:
    west, _, _, north = tile_bounds(TILE_X, TILE_Y, ZOOM)
    res = resolution(ZOOM)
    # 300x200 pixels starting 100 px into the tile: spans tiles (x, y) .. (x+1, y+1).
    bounds = (west + 100 * res, north - 300 * res, west + 400 * res, north - 100 * res)
    ref = ImageRef(
        provider="xyz", uri=f"{server_url}/tiles/{{z}}/{{x}}/{{y}}.png", bounds=bounds, zoom=ZOOM
    )
    with XyzProvider(timeout_s=5) as provider:
        chip = provider.read(ref)
    assert chip.pixels.shape == (3, 200, 300), "alpha dropped, window exact"
    assert chip.crs == "EPSG:3857"
    assert chip.bounds == pytest.approx(bounds)
    col0, row0 = TILE_X * TILE_SIZE + 100, TILE_Y * TILE_SIZE + 100
    np.testing.assert_array_equal(chip.pixels[0, 0], (col0 + np.arange(300)) % 251)
    np.testing.assert_array_equal(chip.pixels[1, :, 0], (row0 + np.arange(200)) % 251)


def test_lonlat_bounds_and_an_oversized_request_pick_a_fitting_zoom(server_url: str) -> None:
    lonlat = transform_bounds("EPSG:3857", "EPSG:4326", *tile_bounds(TILE_X, TILE_Y, ZOOM))
    ref = ImageRef(
        provider="xyz",
        uri=f"{server_url}/tiles/{{z}}/{{x}}/{{y}}.png",
        bounds=lonlat,
        bounds_crs="EPSG:4326",
        zoom=20,  # 4096 px at zoom 20; only zoom 18 (1024 px) fits
    )
    with XyzProvider(timeout_s=5, max_size=1024) as provider:
        chip = provider.read(ref)
    assert chip.pixels.shape == (3, 1024, 1024)
    assert chip.transform.a == pytest.approx(resolution(18))


def xyz_error(uri: str, timeout_s: float) -> ImageryError:
    ref = ImageRef(provider="xyz", uri=uri, bounds=tile_bounds(TILE_X, TILE_Y, ZOOM), zoom=ZOOM)
    with XyzProvider(timeout_s=timeout_s) as provider, pytest.raises(ImageryError) as info:
        provider.read(ref)
    return info.value


@pytest.mark.parametrize(
    ("kind", "code", "transient"),
    [
        ("slow", "imagery.timeout", True),
        ("error", "imagery.unavailable", True),
        ("gone", "imagery.missing", False),
        ("corrupt", "imagery.corrupt", False),
        ("html", "imagery.unsupported", False),
    ],
)
def test_tile_failures_are_classified(
    server_url: str, kind: str, code: str, transient: bool
) -> None:
    err = xyz_error(f"{server_url}/{kind}/{{z}}/{{x}}/{{y}}.png", timeout_s=0.5)
    assert (err.code, err.transient) == (code, transient)


def test_refused_connection_is_unreachable() -> None:
    err = xyz_error(f"http://127.0.0.1:{free_port()}/{{z}}/{{x}}/{{y}}.png", timeout_s=2)
    assert (err.code, err.transient) == ("imagery.unreachable", True)
