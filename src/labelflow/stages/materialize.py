"""materialize: annotations.valid → samples.ready | annotations.quarantine.

For a revision that makes a sample: read the image chip, rasterize the labels into a
class-index mask aligned with it, run the sample checks, and store chip and mask in the blob
store under their content hashes. Storing is idempotent (same bytes, same key), so a batch
redone after a crash writes nothing new. A revision that removes its sample passes through as
a :class:`SampleRemoval`.

Failures are classified for the runner: imagery timeouts and 5xx are transient (retried via
the retry topics); a missing or corrupt image, or one without the CRS its geographic labels
need, is permanent (dead-lettered, replayable once the image is fixed); labels that cannot be
drawn are permanent; a sample failing its checks is quarantined with the failed checks as
reasons.

Threads: ``materialize_threads`` per worker (default: the machine's cores). The work per
sample is reading, rasterizing, checking and encoding, all in GDAL and numpy, which release
the GIL, so one worker uses the cores it is given without a process per core.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from labelflow.config import Settings
from labelflow.imagery.base import ImageryCrsInvalid
from labelflow.kafka.topics import Topic
from labelflow.masks import class_pixel_counts, rasterize_event
from labelflow.model import (
    AnnotationEvent,
    CoordSpace,
    Lineage,
    Reason,
    SampleRemoval,
    SampleVersion,
)
from labelflow.quality.samples import all_passed, check_sample
from labelflow.stage import Output, PermanentError, Processor, Record, Result, Stage
from labelflow.stages.context import StageContext
from labelflow.stages.validate import quarantine


class Materializer(Processor):
    """Materializes a chunk of revisions on a thread pool (reading, rasterizing, checking and
    encoding release the GIL in GDAL and numpy), then makes the chunk's blobs durable once,
    at the runner's ``flush``, just before the transaction that names them commits."""

    def __init__(self, settings: Settings) -> None:
        self.ctx = StageContext.open(settings, blobs=True, imagery=True)
        assert self.ctx.blobs is not None
        # Temp files of a worker killed between writing a batch's blobs and syncing them.
        self.ctx.blobs.sweep_temp()
        self.threads = settings.materialize_threads
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="materialize")

    def process(self, records: Sequence[Record]) -> list[Result]:
        if self.threads == 1 or len(records) == 1:
            return super().process(records)
        return list(self.pool.map(self.run_one, records))

    def process_one(self, record: Record) -> list[Output]:
        event = record.event()
        if not isinstance(event, AnnotationEvent):
            raise PermanentError(
                "event.unexpected_schema", f"expected an annotation, got {type(event).__name__}"
            )
        if event.removes_sample:
            removal = SampleRemoval(
                sample_id=event.task_id,
                revision=event.revision,
                status=event.status,
                source=event.source,
                event_id=event.event_id,
            )
            return [Output(Topic.SAMPLES_READY, removal, key=event.task_id)]
        return materialize(self.ctx, record, event)

    def flush(self) -> None:
        assert self.ctx.blobs is not None
        self.ctx.blobs.sync()

    def discard(self) -> None:
        assert self.ctx.blobs is not None
        self.ctx.blobs.discard()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.ctx.close()


def materialize(ctx: StageContext, record: Record, event: AnnotationEvent) -> list[Output]:
    """The sample of one accepted revision, or why there is none."""
    assert ctx.imagery is not None and ctx.blobs is not None
    if event.image is None:  # validate refuses these; a hand-made record could still carry one
        raise PermanentError("image.missing_reference", "the revision names no image")
    chip = ctx.imagery.read(event.image)
    if event.coordinates == CoordSpace.GEO and event.crs and chip.crs is None:
        # The labels' CRS passed validation; it is the image that cannot be placed.
        raise ImageryCrsInvalid(f"{event.image.uri} has no CRS to place {event.crs} labels")
    mask = rasterize_event(event, chip, ctx.settings.taxonomy)
    checks = check_sample(chip, mask, ctx.settings.sample_rules)
    if not all_passed(checks):
        failed = [Reason(code=c.code, message=c.message) for c in checks if not c.passed]
        return [quarantine(record, STAGE.name, failed, event)]
    image_hash = ctx.blobs.put_raster(
        chip.pixels, crs=chip.crs, transform=chip.transform, nodata=chip.nodata
    )
    mask_hash = ctx.blobs.put_raster(mask, crs=chip.crs, transform=chip.transform)
    version = SampleVersion(
        sample_id=event.task_id,
        revision=event.revision,
        image_hash=image_hash,
        mask_hash=mask_hash,
        width=chip.width,
        height=chip.height,
        crs=chip.crs,
        transform=tuple(chip.transform)[:6],
        bounds=chip.bounds,
        class_pixels=class_pixel_counts(mask, ctx.settings.taxonomy),
        features=event.features,
        checks=checks,
        lineage=Lineage(
            source=event.source,
            task_id=event.task_id,
            revision=event.revision,
            event_id=event.event_id,
            image_uri=event.image.uri,
            image_content_hash=chip.content_hash,
            code_version=ctx.code_version,
            config_hash=ctx.config_hash,
            kafka_topic=record.topic,
            kafka_partition=record.partition,
            kafka_offset=record.offset,
        ),
    )
    return [Output(Topic.SAMPLES_READY, version, key=event.task_id)]


STAGE = Stage(
    name="materialize",
    inputs=(Topic.VALID,),
    outputs=(Topic.SAMPLES_READY, Topic.QUARANTINE),
    setup=Materializer,
)
