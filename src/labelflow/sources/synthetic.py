"""A deterministic stream of annotation traffic for the demo and end-to-end tests.

The same seed gives the same scenes, revisions, bad inputs and delivery order, byte for byte,
so a failing run can be replayed. Besides the deliveries the generator returns the *expected
final state* — per task, the revision that must end up in the catalog and whether a sample
must exist — derived from what it generated, not from anything the pipeline computes, so an
end-to-end test can compare the two.

The stream mimics what a real labelling tool does to us: several revisions per task (edits,
approvals), rejections and later resubmissions, deletions, the same revision delivered twice
(a retried webhook, a re-dropped file), revisions of one task arriving out of order, and a
fraction of bad inputs each carrying the reason code the validate stage must give it.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from labelflow.model import AnnotationEvent, CoordSpace, Feature, ImageRef, Status
from labelflow.quality.annotations import Code
from labelflow.sources.base import polygon

SOURCE = "synthetic"
CLASSES = ("building", "road", "tree", "water")


class SyntheticConfig(BaseModel):
    """How much traffic, and how unruly."""

    model_config = ConfigDict(frozen=True)

    seed: int = 0
    tasks: int = Field(20, ge=1)
    scene_size: int = Field(256, ge=32, description="Scenes are square, in pixels.")
    max_edits: int = Field(3, ge=0, description="Revisions after the first, at most.")
    reject_fraction: float = Field(0.15, ge=0, le=1)
    delete_fraction: float = Field(0.1, ge=0, le=1)
    duplicate_fraction: float = Field(0.1, ge=0, le=1)
    out_of_order_fraction: float = Field(0.1, ge=0, le=1)
    bad_fraction: float = Field(0.1, ge=0, le=1)
    rate_per_s: float = Field(50.0, gt=0, description="Deliveries per second of the schedule.")
    start: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    classes: tuple[str, ...] = Field(
        CLASSES, min_length=1, description="Labels of good shapes; the taxonomy's names."
    )


class Delivery(BaseModel):
    """One message as a source would hand it to ingest: raw bytes of an event (or of
    something that should have been one), due ``at_s`` seconds after the start."""

    model_config = ConfigDict(frozen=True)

    at_s: float
    task_id: str
    value: bytes
    kind: Literal["revision", "duplicate", "bad"]
    expected_code: str | None = Field(None, description="For bad inputs: the code to expect.")


class ExpectedTask(BaseModel):
    """What the catalog must say about a task once the whole history is processed."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    revision: int | None = Field(None, description="Newest valid revision; None if none.")
    sample: bool = Field(description="Whether a current sample must exist.")


class SyntheticHistory(BaseModel):
    scenes: list[str]
    deliveries: list[Delivery]
    expected: dict[str, ExpectedTask]


def scene_image(scene_id: str, size: int) -> ImageRef:
    """The image reference the synthetic imagery provider renders for a scene."""
    return ImageRef(
        provider="synthetic",
        uri=f"synthetic://{scene_id}",
        scene_id=scene_id,
        width=size,
        height=size,
    )


def generate(config: SyntheticConfig | None = None) -> SyntheticHistory:
    """A whole history: every task's revisions, interleaved across tasks, with duplicates,
    reorderings and bad inputs mixed in, plus its expected final state."""
    config = config or SyntheticConfig()
    rng = random.Random(config.seed)
    scenes = [f"s{config.seed}-{i:05d}" for i in range(config.tasks)]
    per_task: list[list[Delivery]] = []
    expected: dict[str, ExpectedTask] = {}
    for index, scene_id in enumerate(scenes):
        deliveries, final = _task_history(rng, config, index, scene_id)
        per_task.append(deliveries)
        task_id = f"{SOURCE}:{scene_id}"
        expected[task_id] = ExpectedTask(
            task_id=task_id,
            revision=final.revision if final else None,
            sample=final is not None and not final.removes_sample,
        )
    stream = _interleave(rng, per_task)
    stream = _add_duplicates(rng, config, stream)
    scheduled = [
        d.model_copy(update={"at_s": round(i / config.rate_per_s, 6)}) for i, d in enumerate(stream)
    ]
    return SyntheticHistory(scenes=scenes, deliveries=scheduled, expected=expected)


def _task_history(
    rng: random.Random, config: SyntheticConfig, index: int, scene_id: str
) -> tuple[list[Delivery], AnnotationEvent | None]:
    """One task's deliveries in the order the tool produced them, and its last valid event."""
    task_id = f"{SOURCE}:{scene_id}"
    image = scene_image(scene_id, config.scene_size)
    born = config.start + timedelta(minutes=index)
    statuses = [Status.SUBMITTED]
    for _ in range(rng.randint(0, config.max_edits)):
        roll = rng.random()
        if roll < config.reject_fraction:
            statuses.append(Status.REJECTED)
        else:
            statuses.append(Status.APPROVED if roll < 0.5 else Status.SUBMITTED)
    if rng.random() < config.delete_fraction:
        statuses.append(Status.DELETED)
    out: list[Delivery] = []
    final: AnnotationEvent | None = None
    revision = 0
    for status in statuses:
        if rng.random() < config.bad_fraction:
            revision += 1
            out.append(_bad_delivery(rng, config, task_id, image, revision, born))
        revision += 1
        removed = status in (Status.REJECTED, Status.DELETED)
        final = AnnotationEvent(
            source=SOURCE,
            task_id=task_id,
            revision=revision,
            status=status,
            features=[] if removed else _features(rng, config.scene_size, config.classes),
            coordinates=CoordSpace.PIXEL,
            image=None if status == Status.DELETED else image,
            annotator=f"annotator-{rng.randint(1, 5)}",
            created_at=born,
            updated_at=born + timedelta(seconds=revision),
        )
        out.append(_delivery(task_id, final.model_dump_json().encode(), "revision"))
    if len(out) > 1 and rng.random() < config.out_of_order_fraction:
        at = rng.randrange(len(out) - 1)
        out[at], out[at + 1] = out[at + 1], out[at]
    return out, final


def _delivery(
    task_id: str,
    value: bytes,
    kind: Literal["revision", "duplicate", "bad"],
    code: str | None = None,
) -> Delivery:
    return Delivery(at_s=0.0, task_id=task_id, value=value, kind=kind, expected_code=code)


def _features(rng: random.Random, size: int, classes: tuple[str, ...]) -> list[Feature]:
    """A few rotated boxes, each wholly inside the scene whatever its angle."""
    features = []
    for _ in range(rng.randint(1, 4)):
        w, h = rng.uniform(8, size / 4), rng.uniform(8, size / 4)
        margin = math.hypot(w, h) / 2
        cx, cy = rng.uniform(margin, size - margin), rng.uniform(margin, size - margin)
        cos, sin = math.cos(angle := rng.uniform(0, math.pi / 2)), math.sin(angle)
        corners = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
        ring = [
            (round(cx + x * cos - y * sin, 3), round(cy + x * sin + y * cos, 3)) for x, y in corners
        ]
        features.append(Feature(label=rng.choice(classes), geometry=polygon([ring])))
    return features


def _bad_delivery(
    rng: random.Random,
    config: SyntheticConfig,
    task_id: str,
    image: ImageRef,
    revision: int,
    born: datetime,
) -> Delivery:
    """A revision that must be quarantined, with the code it must get."""
    size = config.scene_size
    square = [[10, 10], [40, 10], [40, 40], [10, 40], [10, 10]]
    broken: dict[str, tuple[str, dict[str, object]]] = {
        Code.GEOMETRY_SELF_INTERSECTION: (
            "building",
            {
                "type": "Polygon",
                "coordinates": [[[10, 10], [50, 50], [50, 10], [10, 50], [10, 10]]],
            },
        ),
        Code.CLASS_UNKNOWN: ("spaceship", {"type": "Polygon", "coordinates": [square]}),
        Code.GEOMETRY_OUT_OF_IMAGE: (
            "tree",
            {
                "type": "Polygon",
                "coordinates": [[[size - 10, 5], [size + 30, 5], [size + 30, 30], [size - 10, 5]]],
            },
        ),
        Code.GEOMETRY_UNCLOSED_RING: ("road", {"type": "Polygon", "coordinates": [square[:-1]]}),
        Code.GEOMETRY_UNSUPPORTED_TYPE: ("tree", {"type": "Point", "coordinates": [5, 5]}),
    }
    code = rng.choice([*broken, Code.SCHEMA_MALFORMED_JSON])
    if code == Code.SCHEMA_MALFORMED_JSON:
        return _delivery(
            task_id, b'{"source": "synthetic", "task_id": "' + task_id.encode(), "bad", code
        )
    label, geometry = broken[code]
    event = AnnotationEvent(
        source=SOURCE,
        task_id=task_id,
        revision=revision,
        status=Status.SUBMITTED,
        features=[Feature(label=label, geometry=geometry)],
        image=image,
        created_at=born,
        updated_at=born + timedelta(seconds=revision),
    )
    return _delivery(task_id, event.model_dump_json().encode(), "bad", code)


def _interleave(rng: random.Random, per_task: list[list[Delivery]]) -> list[Delivery]:
    """Merge the tasks' streams at random, keeping each task's own order."""
    queues = [list(q) for q in per_task if q]
    out: list[Delivery] = []
    while queues:
        queue = rng.choice(queues)
        out.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return out


def _add_duplicates(
    rng: random.Random, config: SyntheticConfig, stream: list[Delivery]
) -> list[Delivery]:
    """Re-send some good revisions later on, as a retried webhook or re-dropped file does."""
    later: dict[int, list[Delivery]] = {}
    for index, delivery in enumerate(stream):
        if delivery.kind == "revision" and rng.random() < config.duplicate_fraction:
            at = rng.randint(index + 1, len(stream))
            later.setdefault(at, []).append(delivery.model_copy(update={"kind": "duplicate"}))
    out: list[Delivery] = []
    for index in range(len(stream) + 1):
        out.extend(later.get(index, []))
        if index < len(stream):
            out.append(stream[index])
    return out
