"""What a stage worker process shares between records: settings, catalog, blobs, imagery.

Built once per process on first use (a stage module is imported before its worker knows it
will run), from the environment like every other labelflow process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

from labelflow import __version__
from labelflow.catalog.blobs import BlobStore
from labelflow.catalog.store import Catalog, CatalogError
from labelflow.config import Settings, get_settings
from labelflow.imagery.base import ImageryError
from labelflow.imagery.providers import Imagery
from labelflow.masks import MaskError
from labelflow.stage import PermanentError, TransientError


@dataclass
class StageContext:
    settings: Settings
    catalog: Catalog
    blobs: BlobStore
    imagery: Imagery
    code_version: str = __version__


def build_context(settings: Settings) -> StageContext:
    catalog = Catalog(settings.resolved_catalog_url)
    catalog.migrate()
    return StageContext(
        settings=settings,
        catalog=catalog,
        blobs=BlobStore.from_settings(settings),
        imagery=Imagery(settings),
    )


@cache
def context() -> StageContext:
    """This process's context, from the environment."""
    return build_context(get_settings())


@contextmanager
def classified_errors() -> Iterator[None]:
    """Turn the domain's classified failures (catalog, imagery, masks: each has ``code``,
    ``message`` and ``transient``) into the runner's transient / permanent errors."""
    try:
        yield
    except (CatalogError, ImageryError, MaskError) as exc:
        error = TransientError if exc.transient else PermanentError
        raise error(exc.code, exc.message) from exc
