"""The Label Studio imagery provider against a small server over real HTTP: the image the
annotator saw, fetched with the token, decoded, checked and georeferenced."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.io import MemoryFile
from rasterio.windows import Window

from labelflow.imagery.base import ImageryError
from labelflow.imagery.labelstudio import LabelStudioProvider
from labelflow.model import ImageRef

TOKEN = "tok"


def _encode(pixels: np.ndarray, driver: str) -> bytes:
    bands, height, width = pixels.shape
    with MemoryFile() as memfile:
        with memfile.open(
            driver=driver, width=width, height=height, count=bands, dtype=pixels.dtype
        ) as dst:
            dst.write(pixels)
        return memfile.read()


RGB = np.stack([np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 251] * 3).astype(np.uint8)
NOISE = np.random.default_rng(0).integers(0, 255, (3, 48, 64)).astype(np.uint8)
RGBA = np.concatenate([RGB, np.full((1, 48, 64), 255, np.uint8)])
RGBA[3, :10, :] = 0  # the top ten rows are transparent


class Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes, dict[str, str]]]
    seen: list[tuple[str, str | None]]
    release: threading.Event

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/data/") and self.headers.get("Authorization") != f"Token {TOKEN}":
            return self._reply(401, b"{}", {})
        if self.path == "/slow.png":
            self.release.wait(5)
        status, body, headers = self.routes.get(self.path, (404, b"not found", {}))
        self._reply(status, body, headers)

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def server() -> Iterator[tuple[str, type[Handler]]]:
    handler = type("H", (Handler,), {"routes": {}, "seen": [], "release": threading.Event()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        handler.release.set()
        httpd.shutdown()
        httpd.server_close()


def _provider(url: str, **kwargs: object) -> LabelStudioProvider:
    return LabelStudioProvider(url, TOKEN, timeout_s=2, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("driver", ["PNG", "JPEG", "GTiff"])
def test_local_files_and_uploads_are_fetched_with_the_token(
    server: tuple[str, type[Handler]], driver: str
) -> None:
    url, handler = server
    body = _encode(RGB, driver)
    handler.routes["/data/local-files/?d=chips/a.img"] = (200, body, {})
    handler.routes["/data/upload/3/a.img"] = (200, body, {})
    with _provider(url) as provider:
        local = provider.read(
            ImageRef(provider="labelstudio", uri="/data/local-files/?d=chips/a.img")
        )
        upload = provider.read(
            ImageRef(provider="labelstudio", uri="/data/upload/3/a.img", width=64, height=48)
        )
    assert local.pixels.shape == (3, 48, 64)
    if driver != "JPEG":  # lossy
        assert (local.pixels == RGB).all()
    assert local.content_hash == upload.content_hash
    assert (local.crs, local.transform) == (None, Affine.identity())
    assert all(auth == f"Token {TOKEN}" for _, auth in handler.seen)


def test_alpha_is_validity_not_data(server: tuple[str, type[Handler]]) -> None:
    url, handler = server
    handler.routes["/data/upload/1/rgba.png"] = (200, _encode(RGBA, "PNG"), {})
    with _provider(url) as provider:
        chip = provider.read(ImageRef(provider="labelstudio", uri="/data/upload/1/rgba.png"))
    assert chip.pixels.shape == (3, 48, 64)
    assert chip.nodata == 0
    assert (chip.pixels[:, :10] == 0).all() and (chip.pixels[:, 10:] == RGB[:, 10:]).all()


def test_cloud_object_follows_the_presign_redirect_without_the_token(
    server: tuple[str, type[Handler]],
) -> None:
    url, handler = server
    bucket = url.replace("127.0.0.1", "localhost")  # another origin: must not get the token
    handler.routes["/tasks/9/presign/?fileuri=czM6Ly9iL2EucG5n"] = (
        303,
        b"",
        {"Location": f"{bucket}/bucket/a.png?X-Amz-Signature=abc"},
    )
    handler.routes["/bucket/a.png?X-Amz-Signature=abc"] = (200, _encode(RGB, "PNG"), {})
    with _provider(url) as provider:
        chip = provider.read(
            ImageRef(provider="labelstudio", uri="/tasks/9/presign/?fileuri=czM6Ly9iL2EucG5n")
        )
    assert (chip.pixels == RGB).all()
    assert handler.seen == [
        ("/tasks/9/presign/?fileuri=czM6Ly9iL2EucG5n", f"Token {TOKEN}"),
        ("/bucket/a.png?X-Amz-Signature=abc", None),
    ]


def test_an_absolute_url_elsewhere_gets_no_token(server: tuple[str, type[Handler]]) -> None:
    url, handler = server
    handler.routes["/cdn/a.png"] = (200, _encode(RGB, "PNG"), {})
    other = url.replace("127.0.0.1", "localhost")
    with _provider(url) as provider:
        provider.read(ImageRef(provider="labelstudio", uri=f"{other}/cdn/a.png"))
        provider.read(ImageRef(provider="labelstudio", uri=f"{url}/cdn/a.png"))
    assert [auth for _, auth in handler.seen] == [None, f"Token {TOKEN}"]


@pytest.mark.parametrize(
    ("status", "body", "code", "transient"),
    [
        (404, b"", "imagery.missing", False),
        (500, b"", "imagery.unavailable", True),
        (503, b"", "imagery.unavailable", True),
        (429, b"", "imagery.unavailable", True),
        (400, b"", "imagery.refused", False),
        (200, b"this is not an image", "imagery.unsupported", False),
        (200, _encode(NOISE, "PNG")[:2000], "imagery.corrupt", False),  # truncated
        (200, _encode(NOISE, "JPEG")[:2000], "imagery.corrupt", False),
    ],
)
def test_failures_are_classified(
    server: tuple[str, type[Handler]], status: int, body: bytes, code: str, transient: bool
) -> None:
    url, handler = server
    handler.routes["/data/upload/1/x.png"] = (status, body, {})
    with _provider(url) as provider, pytest.raises(ImageryError) as err:
        provider.read(ImageRef(provider="labelstudio", uri="/data/upload/1/x.png"))
    assert (err.value.code, err.value.transient) == (code, transient)


def test_a_refused_token_is_permanent(server: tuple[str, type[Handler]]) -> None:
    url, _ = server
    provider = LabelStudioProvider(url, "wrong", timeout_s=2)
    with provider, pytest.raises(ImageryError) as err:
        provider.read(ImageRef(provider="labelstudio", uri="/data/upload/1/x.png"))
    assert (err.value.code, err.value.transient) == ("imagery.unauthorized", False)


def test_timeouts_and_refused_connections_are_transient(
    server: tuple[str, type[Handler]],
) -> None:
    url, _ = server
    provider = LabelStudioProvider(url, TOKEN, timeout_s=0.3)
    started = time.monotonic()
    with provider, pytest.raises(ImageryError) as slow:
        provider.read(ImageRef(provider="labelstudio", uri=f"{url}/slow.png"))
    assert time.monotonic() - started < 3
    gone = LabelStudioProvider("http://127.0.0.1:9", TOKEN, timeout_s=1)
    with gone, pytest.raises(ImageryError) as refused:
        gone.read(ImageRef(provider="labelstudio", uri="/data/upload/1/x.png"))
    assert (slow.value.code, slow.value.transient) == ("imagery.timeout", True)
    assert (refused.value.code, refused.value.transient) == ("imagery.unreachable", True)


def test_a_path_without_a_configured_label_studio_is_permanent() -> None:
    with LabelStudioProvider(None, None) as provider, pytest.raises(ImageryError) as err:
        provider.read(ImageRef(provider="labelstudio", uri="/data/upload/1/x.png"))
    assert (err.value.code, err.value.transient) == ("imagery.not_configured", False)


def test_an_image_of_another_size_than_the_labels_is_refused(
    server: tuple[str, type[Handler]],
) -> None:
    url, handler = server
    handler.routes["/data/upload/1/a.png"] = (200, _encode(RGB, "PNG"), {})
    ref = ImageRef(provider="labelstudio", uri="/data/upload/1/a.png", width=640, height=480)
    with _provider(url) as provider, pytest.raises(ImageryError) as err:
        provider.read(ref)
    assert err.value.code == "imagery.size_mismatch"
    assert "640x480" in err.value.message


def test_a_large_image_is_downsampled_with_its_transform(
    server: tuple[str, type[Handler]],
) -> None:
    url, handler = server
    handler.routes["/data/upload/1/a.png"] = (200, _encode(RGB, "PNG"), {})
    ref = ImageRef(provider="labelstudio", uri="/data/upload/1/a.png", bounds=(0, 0, 640, 480))
    with _provider(url, max_size=32) as provider:
        chip = provider.read(ref)
    assert chip.pixels.shape == (3, 24, 32)
    assert chip.bounds == (0, 0, 640, 480)


def test_bounds_and_crs_in_the_task_data_georeference_the_chip(
    server: tuple[str, type[Handler]],
) -> None:
    url, handler = server
    handler.routes["/data/upload/1/a.png"] = (200, _encode(RGB, "PNG"), {})
    ref = ImageRef(
        provider="labelstudio",
        uri="/data/upload/1/a.png",
        bounds=(500000.0, 4100000.0, 500064.0, 4100048.0),
        bounds_crs="EPSG:32631",
    )
    with _provider(url) as provider:
        chip = provider.read(ref)
    assert chip.crs == "EPSG:32631"
    assert chip.transform == Affine(1.0, 0.0, 500000.0, 0.0, -1.0, 4100048.0)


def test_scene_and_window_georeference_the_chip_or_are_read_instead(
    server: tuple[str, type[Handler]], imagery_dir: Path
) -> None:
    url, handler = server
    scene = str(imagery_dir / "cogeo.tif")
    window = Window(256, 128, 64, 48)
    with rasterio.open(scene) as src:
        original = src.read(window=window)
        expected = src.window_transform(window)
    handler.routes["/data/upload/1/cut.png"] = (200, _encode(original, "PNG"), {})
    ref = ImageRef(
        provider="labelstudio",
        uri="/data/upload/1/cut.png",
        width=64,
        height=48,
        scene_uri=scene,
        window=(256, 128, 64, 48),
    )
    with _provider(url) as displayed, _provider(url, read_original=True) as original_reader:
        shown = displayed.read(ref)
        read = original_reader.read(ref)
        with pytest.raises(ImageryError) as err:
            original_reader.read(ref.model_copy(update={"window": (256, 128, 65, 48)}))
    assert (shown.crs, shown.transform) == ("EPSG:3857", expected)
    assert (read.crs, read.transform) == ("EPSG:3857", expected)
    assert (shown.pixels == read.pixels).all()
    assert err.value.code == "imagery.size_mismatch"
    assert len(handler.seen) == 1  # the original was read from the scene, not fetched
