"""One entry point for the materialize stage: the right provider for each image reference."""

from __future__ import annotations

from typing import Self

from labelflow.config import Settings
from labelflow.imagery.base import Chip, ImageryProvider
from labelflow.imagery.geotiff import GeoTiffProvider
from labelflow.imagery.labelstudio import LabelStudioProvider
from labelflow.imagery.synthetic import SyntheticProvider
from labelflow.imagery.xyz import XyzProvider
from labelflow.model import ImageRef


class Imagery:
    """All providers, built once per worker (the HTTP ones keep a connection pool).

    Synthetic scenes are cached under ``<data_dir>/imagery/synthetic``.
    """

    def __init__(self, settings: Settings) -> None:
        max_size, http_timeout_s = settings.max_chip_size, settings.imagery_timeout_s
        self._xyz = XyzProvider(timeout_s=http_timeout_s, max_size=max_size)
        geotiff = GeoTiffProvider(max_size=max_size, http_timeout_s=http_timeout_s)
        token = settings.labelstudio_token
        self._labelstudio = LabelStudioProvider(
            settings.labelstudio_url,
            token.get_secret_value() if token else None,
            timeout_s=http_timeout_s,
            max_size=max_size,
            read_original=settings.labelstudio_read_original,
            geotiff=geotiff,
        )
        self.providers: dict[str, ImageryProvider] = {
            "geotiff": geotiff,
            "xyz": self._xyz,
            "labelstudio": self._labelstudio,
            "synthetic": SyntheticProvider(
                settings.data_dir / "imagery" / "synthetic", max_size=max_size
            ),
        }

    def read(self, ref: ImageRef) -> Chip:
        """The chip ``ref`` describes; raises :class:`~labelflow.imagery.base.ImageryError`."""
        return self.providers[ref.provider].read(ref)

    def close(self) -> None:
        """Close every provider: HTTP pools, and the datasets each thread keeps open."""
        for provider in self.providers.values():
            provider.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
