"""Windowed GeoTIFF reads on real imagery, label reprojection, classified failures, alpha and
masks as validity, and datasets kept open per thread."""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.warp import transform_bounds, transform_geom
from rasterio.windows import Window

from labelflow.imagery import geotiff
from labelflow.imagery.base import ImageryError
from labelflow.imagery.geotiff import GeoTiffProvider
from labelflow.masks import rasterize_features
from labelflow.model import CoordSpace, Feature, ImageRef, Taxonomy
from labelflow.quality.samples import SampleRules, check_sample
from support import free_port

TAXONOMY = Taxonomy()


def _window_bounds(path: Path, window: Window) -> tuple[float, float, float, float]:
    with rasterio.open(path) as src:
        return tuple(rasterio.windows.bounds(window, src.transform))  # type: ignore[return-value]


def _pixel_box(x0: float, y0: float, x1: float, y1: float) -> dict:
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Polygon", "coordinates": [ring]}


def test_whole_cog_is_read_downsampled_to_max_size(imagery_dir: Path) -> None:
    chip = GeoTiffProvider(max_size=256).read(ImageRef(uri=str(imagery_dir / "cogeo.tif")))
    with rasterio.open(imagery_dir / "cogeo.tif") as src:
        full_bounds = tuple(src.bounds)
        pixel = src.transform.a
    assert chip.pixels.shape == (3, 256, 256)
    assert chip.crs == "EPSG:3857"
    assert chip.transform.a == pytest.approx(pixel * 4)
    assert chip.bounds == pytest.approx(full_bounds)
    assert 20 < chip.pixels.mean() < 235, "real content, not a blank read"


def test_window_covers_exactly_the_requested_bounds(imagery_dir: Path) -> None:
    path = imagery_dir / "cogeo.tif"
    window = Window(100, 200, 200, 128)
    bounds = _window_bounds(path, window)
    chip = GeoTiffProvider().read(ImageRef(uri=str(path), bounds=bounds))
    with rasterio.open(path) as src:
        expected = src.read(window=window)
        expected_transform = src.window_transform(window)
    assert chip.pixels.shape == (3, 128, 200)
    np.testing.assert_array_equal(chip.pixels, expected)
    assert chip.transform.almost_equals(expected_transform)


def test_bounds_in_another_crs_are_transformed_to_the_image_crs(imagery_dir: Path) -> None:
    path = imagery_dir / "cogeo.tif"
    window = Window(300, 300, 256, 256)
    lonlat = transform_bounds("EPSG:3857", "EPSG:4326", *_window_bounds(path, window))
    chip = GeoTiffProvider().read(ImageRef(uri=str(path), bounds=lonlat, bounds_crs="EPSG:4326"))
    assert chip.pixels.shape == (3, 256, 256)
    assert chip.bounds == pytest.approx(_window_bounds(path, window), abs=1e-3)


def test_bounds_past_the_edge_keep_their_extent_and_pad_with_nodata(imagery_dir: Path) -> None:
    path = imagery_dir / "RGB.byte.tif"
    bounds = _window_bounds(path, Window(-50, -50, 100, 100))
    chip = GeoTiffProvider().read(ImageRef(uri=str(path), bounds=bounds))
    assert chip.pixels.shape == (3, 100, 100)
    assert chip.bounds == pytest.approx(bounds)
    assert chip.nodata == 0
    assert (chip.pixels[:, :50, :] == 0).all() and (chip.pixels[:, :, :50] == 0).all()


def test_labels_in_lonlat_land_on_the_utm_scene_and_nodata_is_flagged(imagery_dir: Path) -> None:
    """Landsat in UTM 18N with a rotated footprint: a box drawn in lon/lat must land on the
    pixels of the same box drawn in pixels, and the scene's corner fails the nodata check."""
    path = imagery_dir / "RGB.byte.tif"
    chip = GeoTiffProvider().read(ImageRef(uri=str(path)))
    assert chip.crs == "EPSG:32618" and chip.nodata == 0
    pixel_box = _pixel_box(300, 250, 340, 290)
    utm = {
        "type": "Polygon",
        "coordinates": [[chip.transform @ xy for xy in pixel_box["coordinates"][0]]],
    }
    lonlat = transform_geom("EPSG:32618", "EPSG:4326", utm)
    by_pixel = rasterize_features(
        [Feature(label="water", geometry=pixel_box)], TAXONOMY, chip=chip, space=CoordSpace.PIXEL
    )
    by_lonlat = rasterize_features(
        [Feature(label="water", geometry=lonlat)],
        TAXONOMY,
        chip=chip,
        space=CoordSpace.GEO,
        features_crs="EPSG:4326",
    )
    assert by_pixel[250:290, 300:340].all() and by_pixel.sum() == 40 * 40 * 4
    overlap = np.logical_and(by_pixel, by_lonlat).sum() / np.logical_or(by_pixel, by_lonlat).sum()
    assert overlap > 0.95

    corner = GeoTiffProvider().read(
        ImageRef(uri=str(path), bounds=_window_bounds(path, Window(0, 0, 150, 150)))
    )
    checks = {
        c.code: c for c in check_sample(corner, np.zeros((150, 150), np.uint8), SampleRules())
    }
    assert not checks["sample.nodata_fraction"].passed
    assert checks["sample.nodata_fraction"].value is not None
    assert checks["sample.nodata_fraction"].value > 0.5


def _error(uri: str, **ref: object) -> ImageryError:
    with pytest.raises(ImageryError) as info:
        GeoTiffProvider().read(ImageRef(uri=uri, **ref))  # type: ignore[arg-type]
    return info.value


def test_missing_file_is_permanent_missing(tmp_path: Path) -> None:
    err = _error(str(tmp_path / "nope.tif"))
    assert (err.code, err.transient) == ("imagery.missing", False)


def test_garbage_bytes_are_corrupt(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    err = _error(str(bad))
    assert (err.code, err.transient) == ("imagery.corrupt", False)


def test_truncated_cog_is_corrupt(imagery_dir: Path, tmp_path: Path) -> None:
    data = (imagery_dir / "cogeo.tif").read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 3])
    assert _error(str(cut)).code == "imagery.corrupt"


def test_bounds_outside_the_image_are_out_of_bounds(imagery_dir: Path) -> None:
    err = _error(str(imagery_dir / "cogeo.tif"), bounds=(0.0, 0.0, 10.0, 10.0))
    assert (err.code, err.transient) == ("imagery.out_of_bounds", False)


def test_unknown_bounds_crs_is_crs_invalid(imagery_dir: Path) -> None:
    err = _error(str(imagery_dir / "cogeo.tif"), bounds=(0, 0, 1, 1), bounds_crs="EPSG:999999")
    assert err.code == "imagery.crs_invalid"


def test_http_404_is_missing_and_refused_connection_is_unreachable(tmp_path: Path) -> None:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        missing = _error(f"http://127.0.0.1:{server.server_address[1]}/absent.tif")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert (missing.code, missing.transient) == ("imagery.missing", False)
    refused = _error(f"http://127.0.0.1:{free_port()}/scene.tif")
    assert (refused.code, refused.transient) == ("imagery.unreachable", True)
    unresolvable = _error("http://no-such-host.invalid/scene.tif")
    assert (unresolvable.code, unresolvable.transient) == ("imagery.unreachable", True)


def test_an_unreachable_image_is_read_once_its_server_is_back(tmp_path: Path) -> None:
    """GDAL remembers a failed remote open; a retry must reach the server again, or the
    transient fault would never clear (and read as "not a supported file" instead)."""
    _write_rgb(tmp_path / "scene.tif", np.full((3, 8, 8), 7, np.uint8))
    port = free_port()
    uri = f"http://127.0.0.1:{port}/scene.tif"
    provider = GeoTiffProvider(http_timeout_s=5)
    first = _error_of(provider, uri)
    again = _error_of(provider, uri)
    assert (first.code, again.code) == ("imagery.unreachable", "imagery.unreachable")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        chip = provider.read(ImageRef(uri=uri))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        provider.close()
    assert chip.pixels.shape == (3, 8, 8)


def _error_of(provider: GeoTiffProvider, uri: str) -> ImageryError:
    with pytest.raises(ImageryError) as info:
        provider.read(ImageRef(uri=uri))
    return info.value


@pytest.mark.parametrize(
    ("content", "name"),
    [
        (b"<html><body>Please log in</body></html>", "login.tif"),
        (b"just some text, not a raster", "notes.tif"),
        (b"PK\x03\x04" + bytes(60), "archive.tif"),
    ],
)
def test_bytes_of_no_image_format_are_unsupported(
    content: bytes, name: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    err = _error(str(path))
    assert (err.code, err.transient) == ("imagery.unsupported", False)


def test_a_directory_is_unsupported(tmp_path: Path) -> None:
    assert _error(str(tmp_path)).code == "imagery.unsupported"


def _write_rgb(path: Path, pixels: np.ndarray, **profile: object) -> None:
    bands, height, width = pixels.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        count=bands,
        height=height,
        width=width,
        dtype=pixels.dtype.name,
        crs="EPSG:3857",
        transform=Affine(0.5, 0, 1000, 0, -0.5, 2000),
        **profile,
    ) as dst:
        dst.write(pixels)
        if bands == 4:
            dst.colorinterp = [
                ColorInterp.red,
                ColorInterp.green,
                ColorInterp.blue,
                ColorInterp.alpha,
            ]


def _textured(bands: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(4).integers(30, 220, (bands, size, size), dtype=np.uint8)


def test_alpha_band_is_validity_not_data(tmp_path: Path) -> None:
    rgba = _textured(4)
    rgba[3] = 255
    rgba[3, :, :16] = 0  # a quarter transparent
    rgba[3, 0, 20] = 7  # partly transparent still has data
    path = tmp_path / "rgba.tif"
    _write_rgb(path, rgba)
    chip = GeoTiffProvider().read(ImageRef(uri=str(path)))
    assert chip.pixels.shape == (3, 64, 64), "the alpha band is not a band of the chip"
    assert chip.nodata == 0
    assert (chip.pixels[:, :, :16] == 0).all()
    np.testing.assert_array_equal(chip.pixels[:, :, 16:], rgba[:3, :, 16:])
    checks = {c.code: c for c in check_sample(chip, np.zeros((64, 64), np.uint8), SampleRules())}
    assert checks["sample.nodata_fraction"].value == 0.25
    assert checks["sample.blank"].passed and checks["sample.saturated"].passed


def test_gdal_internal_mask_is_validity(tmp_path: Path) -> None:
    pixels = _textured(3)
    mask = np.full((64, 64), 255, np.uint8)
    mask[40:] = 0
    path = tmp_path / "masked.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        _write_rgb(path, pixels)
        with rasterio.open(path, "r+") as dst:
            dst.write_mask(mask)
    chip = GeoTiffProvider().read(ImageRef(uri=str(path)))
    assert chip.pixels.shape == (3, 64, 64) and chip.nodata == 0
    assert (chip.pixels[:, 40:] == 0).all()
    np.testing.assert_array_equal(chip.pixels[:, :40], pixels[:, :40])


def test_fully_valid_mask_leaves_the_chip_as_read(imagery_dir: Path) -> None:
    """cogeo.tif carries an internal mask that is valid everywhere."""
    chip = GeoTiffProvider().read(ImageRef(uri=str(imagery_dir / "cogeo.tif")))
    assert chip.nodata is None


def test_a_thread_opens_each_scene_once(imagery_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = imagery_dir / "cogeo.tif"
    refs = [
        ImageRef(uri=str(path), bounds=_window_bounds(path, Window(col, 0, 256, 256)))
        for col in range(0, 1024, 256)
    ]
    opened: list[str] = []
    real_open = rasterio.open

    def counting_open(uri: str, *args: object, **kwargs: object) -> object:
        opened.append(uri)
        return real_open(uri, *args, **kwargs)

    monkeypatch.setattr(rasterio, "open", counting_open)
    provider = GeoTiffProvider()
    for ref in refs:
        provider.read(ref)
    provider.metadata(str(path))
    assert opened == [str(path)]
    provider.close()
    provider.read(refs[0])
    assert len(opened) == 2, "close() closed it; the next read opens it again"


def test_open_datasets_are_bounded_per_thread(tmp_path: Path) -> None:
    provider = GeoTiffProvider()
    paths = []
    for i in range(geotiff.MAX_OPEN_PER_THREAD + 4):
        paths.append(tmp_path / f"scene-{i}.tif")
        _write_rgb(paths[-1], _textured(3, 8))
        provider.read(ImageRef(uri=str(paths[-1])))
    cache = provider._thread_cache()
    assert len(cache._open) == geotiff.MAX_OPEN_PER_THREAD
    assert str(paths[0]) not in cache._open and str(paths[-1]) in cache._open
    provider.close()
    assert cache._open == {}


def test_a_scene_replaced_under_the_same_name_is_read_anew(tmp_path: Path) -> None:
    provider = GeoTiffProvider()
    path = tmp_path / "scene.tif"
    _write_rgb(path, _textured(3, 16))
    provider.read(ImageRef(uri=str(path)))
    replacement = tmp_path / "new.tif"
    _write_rgb(replacement, np.full((3, 16, 16), 99, np.uint8))
    replacement.replace(path)
    assert (provider.read(ImageRef(uri=str(path))).pixels == 99).all()
    path.unlink()
    with pytest.raises(ImageryError) as info:
        provider.read(ImageRef(uri=str(path)))
    assert info.value.code == "imagery.missing", "an open handle does not outlive the file"


def test_threads_reading_one_scene_get_the_chips_a_single_thread_gets(
    imagery_dir: Path,
) -> None:
    path = imagery_dir / "cogeo.tif"
    refs = [
        ImageRef(uri=str(path), bounds=_window_bounds(path, Window(c, r, 200, 200)))
        for c in range(0, 800, 100)
        for r in range(0, 800, 200)
    ]
    expected = [GeoTiffProvider().read(ref).content_hash for ref in refs]
    provider = GeoTiffProvider()
    with ThreadPoolExecutor(max_workers=8) as pool:
        hashes = list(pool.map(lambda ref: provider.read(ref).content_hash, refs * 3))
    assert hashes == expected * 3
    provider.close()
