"""What a stage's processor shares between records: settings, catalog, blobs, imagery.

Built by each stage's ``setup`` from the settings the runner hands it — the one settings
object of the process, so ``labelflow --data-dir X run commit`` writes under X — and closed
with the processor. Nothing here is cached per module or read from the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labelflow import __version__
from labelflow.catalog.blobs import BlobStore
from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.imagery.providers import Imagery


@dataclass
class StageContext:
    """The resources of one worker. Only what a stage asks for is opened."""

    settings: Settings
    catalog: Catalog | None = None
    blobs: BlobStore | None = None
    imagery: Imagery | None = None
    code_version: str = field(default=__version__)
    config_hash: str = ""

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        catalog: bool = False,
        blobs: bool = False,
        imagery: bool = False,
    ) -> StageContext:
        """Open the resources a stage needs; the catalog is migrated on open (idempotent,
        safe from many workers at once)."""
        ctx = cls(settings=settings, config_hash=settings.pipeline_config_hash)
        if catalog:
            ctx.catalog = Catalog(settings.resolved_catalog_url)
            ctx.catalog.migrate()
        if blobs:
            # Deferred: a batch's blobs become durable once, before its transaction commits.
            ctx.blobs = BlobStore.from_settings(settings, deferred=True)
        if imagery:
            ctx.imagery = Imagery(settings)
        return ctx

    def close(self) -> None:
        if self.catalog is not None:
            self.catalog.close()
        if self.imagery is not None:
            self.imagery.close()
