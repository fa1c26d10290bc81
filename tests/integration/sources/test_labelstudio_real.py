"""Against a real Label Studio: a project with local-files storage holding PNG chips cut from a
real aerial GeoTIFF, annotated through the REST API (polygons, a rotated rectangle, brushes, a
skip), connected with ``labelflow source add``, backfilled, followed through webhooks and
polling, and restarted after edits made while labelflow was down.

The hints go through the real ``labelstudio`` stage processor (as the runner would hand them
over) and the real webhook endpoint; Kafka is left out, it has its own tests. What is
checked against Label Studio's own state: the events (revision and status per task), the chip
(equal to the bytes Label Studio serves) and each mask (per-class pixel counts against the
exact area of the shapes, computed here from Label Studio's percent coordinates).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio
import uvicorn
from rasterio.io import MemoryFile
from rasterio.windows import Window
from shapely.geometry import Polygon
from typer.testing import CliRunner

from labelflow.api.app import create_app
from labelflow.catalog.store import Catalog
from labelflow.cli import app as cli
from labelflow.config import Settings
from labelflow.errors import ClassifiedError
from labelflow.events import encode
from labelflow.imagery.providers import Imagery
from labelflow.kafka.topics import Topic
from labelflow.masks import class_pixel_counts, rasterize_event
from labelflow.model import AnnotationEvent, Quarantined, Status
from labelflow.quality.annotations import validate_event
from labelflow.sources.labelstudio import TaskChanged, task_to_event
from labelflow.sources.labelstudio_api import LabelStudioClient
from labelflow.sources.labelstudio_sync import LabelStudioFollower, list_tasks
from labelflow.sources.publish import split_hint
from labelflow.sources.state import SourceState
from labelflow.stage import Processor, Record
from labelflow.stages import commit as commit_stage
from labelflow.stages import labelstudio as labelstudio_stage
from labelflow.stages import materialize as materialize_stage
from labelflow.stages import validate as validate_stage
from labelstudio_server import LabelStudioServer, venv_dir
from labelstudio_support import LABEL_CONFIG, encode_brush
from support import free_port, missing_prerequisite, wait_for

pytestmark = pytest.mark.integration

SCENE = Path(__file__).resolve().parents[3] / "../shared/data/imagery/cogeo.tif"
W, H = 256, 192
SECRET = "webhook-secret-for-tests"

# Regions in Label Studio's own shape: percent of the image, rectangles rotated about their
# top-left corner. Shapes of one task do not overlap, so each class's area is its own.
BUILDING = [[8.0, 10.0], [45.0, 12.0], [40.0, 50.0], [10.0, 46.0]]
ROAD = [[55.0, 60.0], [95.0, 62.0], [92.0, 92.0], [58.0, 88.0]]
RECT = {"x": 10.0, "y": 15.0, "width": 30.0, "height": 35.0, "rotation": 20.0}
ROAD_RIGHT = [[62.0, 8.0], [94.0, 8.0], [94.0, 55.0], [62.0, 55.0]]


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r**2


TREE = _disc(70, 80, 45)
WATER = _disc(200, 120, 35) & ~_disc(200, 120, 12)  # a pond with an island


def _polygon(label: str, points: list[list[float]], rid: str) -> dict[str, Any]:
    value = {"points": points, "polygonlabels": [label], "closed": True}
    return _region("polygonlabels", "poly", value, rid)


def _rectangle(label: str, box: dict[str, float], rid: str) -> dict[str, Any]:
    return _region("rectanglelabels", "rect", {**box, "rectanglelabels": [label]}, rid)


def _brush(label: str, mask: np.ndarray, rid: str) -> dict[str, Any]:
    value = {"format": "rle", "rle": encode_brush(mask), "brushlabels": [label]}
    return _region("brushlabels", "brush", value, rid)


def _region(kind: str, name: str, value: dict[str, Any], rid: str) -> dict[str, Any]:
    return {
        "id": rid,
        "type": kind,
        "from_name": name,
        "to_name": "image",
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "value": value,
    }


@dataclass
class Hints:
    """Hints as ``sources.changes`` would carry them, with the offsets a partition gives."""

    records: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, hint: TaskChanged) -> None:
        self.publish_all([hint])

    def publish_all(self, hints: list[TaskChanged]) -> None:
        with self.lock:
            for part in (p for h in hints for p in split_hint(h)):
                self.records.append(
                    Record(
                        topic="sources.changes",
                        partition=0,
                        offset=len(self.records),
                        key=None,
                        value=encode(part),
                        timestamp_ms=int(time.time() * 1000),
                    )
                )

    def take(self) -> list[Record]:
        with self.lock:
            taken, self.records = self.records, []
            return taken


@dataclass
class World:
    server: LabelStudioServer
    ls: httpx.Client
    project: int
    task_ids: dict[str, int]
    settings: Settings
    config_output: str
    hints: Hints = field(default_factory=Hints)
    events: list[AnnotationEvent] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    offset: int = 0

    def annotate(self, chip: str, result: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        task = self.task_ids[chip]
        response = self.ls.post(f"/api/tasks/{task}/annotations/", json={"result": result, **extra})
        assert response.status_code == 201, response.text
        return response.json()

    def process(self, reader: Processor) -> list[AnnotationEvent]:
        """Run the hints so far through the stage processor, as the runner would."""
        new: list[AnnotationEvent] = []
        for record in self.hints.take():
            # Offsets grow across the whole test, like one partition's.
            record = Record(**{**record.__dict__, "offset": self.offset})
            self.offset += 1
            result = reader.run_one(record)
            assert not isinstance(result, ClassifiedError), result
            for out in result:
                if isinstance(out.value, AnnotationEvent):
                    new.append(out.value)
                elif isinstance(out.value, Quarantined):
                    self.quarantined.append(out.value)
        self.events.extend(new)
        return new

    def latest(self) -> dict[str, AnnotationEvent]:
        out: dict[str, AnnotationEvent] = {}
        for event in self.events:
            if event.task_id not in out or event.revision >= out[event.task_id].revision:
                out[event.task_id] = event
        return out


@pytest.fixture(scope="module")
def world(
    labelstudio: LabelStudioServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    if not SCENE.exists():
        missing_prerequisite(f"shared test imagery not found at {SCENE}")
    work = tmp_path_factory.mktemp("labelstudio-real")
    ls = labelstudio.client()
    # 1. PNG chips cut from a real aerial scene, in a folder Label Studio serves.
    chips = labelstudio.files_root / "chips"
    chips.mkdir(parents=True, exist_ok=True)
    with rasterio.open(SCENE) as scene:
        for n, (col, row) in enumerate([(0, 0), (256, 0), (0, 256), (256, 256), (512, 512)]):
            pixels = scene.read(window=Window(col, row, W, H))
            with rasterio.open(
                chips / f"chip{n}.png", "w", driver="PNG", width=W, height=H, count=3,
                dtype="uint8",
            ) as png:  # fmt: skip
                png.write(pixels)
    # 2. A project with local-files storage: one task per chip.
    project, task_ids = _project(ls, chips, "Aerial chips")
    # 3. labelflow source add: connection, token, taxonomy from the label config.
    config = work / "labelflow.toml"
    result = CliRunner().invoke(
        cli,
        ["--data-dir", str(work / "data"), "source", "add", "labelstudio", "--url",
         labelstudio.url, "--project", str(project), "--token", labelstudio.token,
         "--webhook-secret", SECRET],
        env={"LABELFLOW_CONFIG_FILE": str(config), "COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    written = tomllib.loads(config.read_text())
    settings = Settings(
        data_dir=work / "data",
        **{k: v for k, v in written.items() if k.startswith(("labelstudio_", "taxonomy"))},
        labelstudio_page_size=2,  # several pages even for five tasks
    )
    yield World(labelstudio, ls, project, task_ids, settings, result.output)
    ls.close()


def _project(ls: httpx.Client, chips: Path, title: str) -> tuple[int, dict[str, int]]:
    """A project reading the chips through local-files storage: its id, task ids by chip."""
    created = ls.post("/api/projects", json={"title": title, "label_config": LABEL_CONFIG})
    assert created.status_code == 201, created.text
    project = created.json()["id"]
    storage = ls.post(
        "/api/storages/localfiles",
        json={"project": project, "path": str(chips), "regex_filter": r".*\.png",
              "use_blob_urls": True, "title": "chips"},
    )  # fmt: skip
    assert storage.status_code == 201, storage.text
    assert ls.post(f"/api/storages/localfiles/{storage.json()['id']}/sync").status_code == 200
    tasks = ls.get("/api/tasks/", params={"project": project, "page_size": 100}).json()["tasks"]
    task_ids = {Path(t["data"]["image"].split("=")[-1]).stem: t["id"] for t in tasks}
    assert sorted(task_ids) == [f"chip{n}" for n in range(5)]
    return project, task_ids


def _label(world: World) -> World:
    world.annotate("chip0", [_polygon("building", BUILDING, "b0"), _polygon("road", ROAD, "r0")])
    world.annotate(
        "chip1", [_rectangle("building", RECT, "x1"), _polygon("road", ROAD_RIGHT, "r1")]
    )
    world.annotate("chip2", [_brush("tree", TREE, "t2"), _brush("water", WATER, "w2")])
    world.annotate("chip3", [], was_cancelled=True)  # skipped; chip4 stays unlabelled
    return world


@pytest.fixture(scope="module")
def annotated(world: World) -> World:
    """Labels made before labelflow ever saw the project; the story test changes them."""
    return _label(world)


@pytest.fixture(scope="module")
def untouched(world: World) -> World:
    """The same labels in a second project of the same chips, which no test changes."""
    chips = world.server.files_root / "chips"
    project, task_ids = _project(world.ls, chips, "Aerial chips, untouched")
    return _label(World(world.server, world.ls, project, task_ids, world.settings, ""))


def test_source_add_derives_the_taxonomy_from_the_real_label_config(world: World) -> None:
    assert world.settings.taxonomy.classes == {"building": 1, "road": 2, "tree": 3, "water": 4}
    assert world.settings.labelstudio_project == world.project
    assert world.server.token not in world.config_output


def test_backfill_live_edits_and_a_restart_end_in_label_studio_state(annotated: World) -> None:
    world, settings = annotated, annotated.settings
    client = LabelStudioClient(world.server.url, world.server.token, page_size=2)
    catalog = Catalog(settings.resolved_catalog_url)
    catalog.migrate()
    state = SourceState(catalog)
    follower = LabelStudioFollower(client, state, world.hints.publish_all, world.project)
    reader = labelstudio_stage.STAGE.open(settings)
    ids = world.task_ids

    # 1. First start: every existing task is listed; the unlabelled one makes no event.
    assert follower.run_once() == 5
    backfilled = {e.task_id: e for e in world.process(reader)}
    key = {chip: f"{world.project}:{task}" for chip, task in ids.items()}
    assert {k: e.status for k, e in backfilled.items()} == {
        key["chip0"]: Status.SUBMITTED,
        key["chip1"]: Status.SUBMITTED,
        key["chip2"]: Status.SUBMITTED,
        key["chip3"]: Status.SKIPPED,
    }
    assert all(validate_event(e, settings.taxonomy) == [] for e in backfilled.values())
    follower.run_once()
    assert world.process(reader) == []  # nothing changed, nothing emitted again

    # 2. Live: webhooks to labelflow's endpoint, polling behind them.
    with webhook_endpoint(world, catalog) as url:
        hook = world.ls.post(
            "/api/webhooks/",
            json={"project": world.project, "url": url, "send_payload": True,
                  "send_for_all_actions": True, "headers": {"X-Labelflow-Secret": SECRET}},
        )  # fmt: skip
        assert hook.status_code == 201, hook.text
        # An edit: the building of chip0 moves.
        [chip0] = world.ls.get(f"/api/tasks/{ids['chip0']}").json()["annotations"]
        moved = [[x + 2.0, y] for x, y in BUILDING]
        world.ls.patch(
            f"/api/annotations/{chip0['id']}/",
            json={"result": [_polygon("building", moved, "b0"), _polygon("road", ROAD, "r0")]},
        )
        wait_for(lambda: world.hints.records, 30, "the ANNOTATION_UPDATED webhook")
        [edited] = world.process(reader)
        assert edited.task_id == key["chip0"]
        assert edited.revision > backfilled[key["chip0"]].revision
        follower.run_once()
        assert world.process(reader) == []  # the poll saw what the webhook announced

        # An annotation deleted: its webhook names the annotation only.
        [chip1] = world.ls.get(f"/api/tasks/{ids['chip1']}").json()["annotations"]
        assert world.ls.delete(f"/api/annotations/{chip1['id']}/").status_code == 204
        wait_for(lambda: world.hints.records, 30, "the ANNOTATIONS_DELETED webhook")
        before = len(world.hints.records)
        [emptied] = world.process(reader)
        assert before == 1  # one hint, re-reading one task, not the project
        assert (emptied.task_id, emptied.status) == (key["chip1"], Status.DELETED)

        # A skip of a task nobody labelled yet.
        world.annotate("chip4", [], was_cancelled=True)
        wait_for(lambda: world.hints.records, 30, "the skip's webhook")
        [skipped] = world.process(reader)
        assert (skipped.task_id, skipped.status) == (key["chip4"], Status.SKIPPED)

        # A hint for a task that does not exist changes nothing.
        world.hints.publish(
            TaskChanged(project=world.project, task_ids=(999_999,), action="TASKS_DELETED")
        )
        assert world.process(reader) == []
        assert world.ls.delete(f"/api/webhooks/{hook.json()['id']}/").status_code == 204

    # 3. labelflow is down (no webhook endpoint, no poll) while people keep working.
    reader.close()
    world.annotate("chip4", [_polygon("road", ROAD, "r4")])
    world.annotate("chip3", [_polygon("building", BUILDING, "b3")], ground_truth=True)
    assert world.ls.delete(f"/api/tasks/{ids['chip2']}/").status_code == 204

    # 4. Restart: new follower and reader, the same catalog database.
    follower = LabelStudioFollower(
        client, SourceState(catalog), world.hints.publish_all, world.project
    )
    reader = labelstudio_stage.STAGE.open(settings)
    follower.run_once()
    caught_up = {e.task_id: e.status for e in world.process(reader)}
    assert caught_up == {key["chip4"]: Status.SUBMITTED, key["chip3"]: Status.SUBMITTED}

    # 5. What labelflow emitted last, per task, is Label Studio's state. A task deleted while
    # labelflow was down is found only by comparing with the listing (reconciliation).
    listing = {
        t.task_id: t for t in list_tasks(client, world.project, settings.labelstudio_mapping)
    }
    latest = world.latest()
    assert set(listing) == set(latest) - {key["chip2"]}
    for task_id, listed in listing.items():
        assert (latest[task_id].revision, str(latest[task_id].status)) == (
            listed.revision,
            listed.status,
        ), task_id
    assert key["chip2"] not in listing and latest[key["chip2"]].status == Status.SUBMITTED
    assert world.quarantined == []
    reader.close()
    client.close()

    # 6. The events through validate, materialize and commit: the catalog holds a sample for
    # each task Label Studio has a submitted annotation for, at its revision, and none else.
    _pipeline(settings, world.events)
    for task_id, listed in listing.items():
        sample = catalog.state(task_id)
        live = listed.status == "submitted"
        assert sample is not None and sample.revision == listed.revision, task_id
        assert sample.deleted != live, task_id
    catalog.close()


def test_chips_and_masks_are_what_the_annotator_saw(untouched: World) -> None:
    world, settings = untouched, untouched.settings
    cases = {
        "chip0": {"building": _area(BUILDING), "road": _area(ROAD)},
        "chip1": {"building": _rotated_area(RECT), "road": _area(ROAD_RIGHT)},
    }
    with Imagery(settings) as imagery, LabelStudioClient(world.server.url, world.server.token) as c:
        for chip, areas in cases.items():
            task = c.get_task(world.task_ids[chip])
            assert task is not None
            event = task_to_event(task, settings.labelstudio_mapping, world.project)
            image = imagery.read(event.image)  # type: ignore[arg-type]
            assert (image.pixels == _served(world, task["data"]["image"])).all()
            counts = class_pixel_counts(rasterize_event(event, image, settings.taxonomy),
                                        settings.taxonomy)  # fmt: skip
            for label, area in areas.items():
                assert abs(counts[label] - area) <= 0.01 * area, (chip, label, counts, area)


def test_brushes_decode_as_label_studio_decodes_them(untouched: World) -> None:
    world, settings = untouched, untouched.settings
    task = world.ls.get(f"/api/tasks/{world.task_ids['chip2']}").json()
    stored = {
        r["value"]["brushlabels"][0]: r["value"]["rle"] for r in task["annotations"][0]["result"]
    }
    # Label Studio's own decoder (its SDK, in its virtualenv) reads what it stored as we do.
    for label, expected in (("tree", TREE), ("water", WATER)):
        theirs = _decode_with_label_studio(stored[label])
        assert (theirs.reshape(H, W, 4)[:, :, 3] > 0).tolist() == expected.tolist()
    event = task_to_event(task, settings.labelstudio_mapping, world.project)
    with Imagery(settings) as imagery:
        image = imagery.read(event.image)  # type: ignore[arg-type]
    counts = class_pixel_counts(rasterize_event(event, image, settings.taxonomy), settings.taxonomy)
    assert counts == {"tree": int(TREE.sum()), "water": int(WATER.sum())}  # exactly


# --- independent helpers -----------------------------------------------------------------


def _pipeline(settings: Settings, events: list[AnnotationEvent]) -> None:
    """``events`` through the validate, materialize and commit processors in order, one
    transaction per stage, as their runners would hand them over."""
    batch = [
        Record(topic="t", partition=0, offset=n, key=e.task_id.encode(), value=encode(e))
        for n, e in enumerate(events)
    ]
    for stage in (validate_stage.STAGE, materialize_stage.STAGE, commit_stage.STAGE):
        processor = stage.open(settings)
        try:
            results = processor.process(batch)
            processor.flush()
        finally:
            processor.close()
        assert not [r for r in results if isinstance(r, ClassifiedError)], results
        outputs = [out for r in results for out in r]  # type: ignore[union-attr]
        assert not [o for o in outputs if o.topic == Topic.QUARANTINE], outputs
        batch = [
            Record(topic="t", partition=0, offset=n, key=None, value=encode(o.value))  # type: ignore[arg-type]
            for n, o in enumerate(outputs)
        ]


def _area(points: list[list[float]]) -> float:
    return Polygon([(x * W / 100, y * H / 100) for x, y in points]).area


def _rotated_area(box: dict[str, float]) -> float:
    """A rotation keeps the area, but the rotated rectangle must stay in the image for the
    mask to hold all of it: check its corners too."""
    x, y = box["x"] * W / 100, box["y"] * H / 100
    w, h = box["width"] * W / 100, box["height"] * H / 100
    t = np.radians(box["rotation"])
    corners = [(x + cx * np.cos(t) - cy * np.sin(t), y + cx * np.sin(t) + cy * np.cos(t))
               for cx, cy in [(0, 0), (w, 0), (w, h), (0, h)]]  # fmt: skip
    assert all(0 <= cx <= W and 0 <= cy <= H for cx, cy in corners)
    return Polygon(corners).area


def _served(world: World, path: str) -> np.ndarray:
    """The pixels of the image as Label Studio serves it, decoded here on their own."""
    response = world.ls.get(path)
    assert response.status_code == 200
    with MemoryFile(response.content) as memfile, memfile.open() as png:
        return png.read()


def _decode_with_label_studio(rle: list[int]) -> np.ndarray:
    script = (
        "import json, sys; from label_studio_sdk.converter.brush import decode_rle; "
        "print(json.dumps(decode_rle(json.load(sys.stdin)).tolist()))"
    )
    done = subprocess.run(
        [str(venv_dir() / "bin" / "python"), "-c", script],
        input=json.dumps(rle), capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return np.array(json.loads(done.stdout), dtype=np.uint8)


class webhook_endpoint:
    """labelflow's API app serving ``POST /webhooks/labelstudio`` on a free port, its hints
    going to the world's hint list; the URL to register in Label Studio."""

    def __init__(self, world: World, catalog: Catalog) -> None:
        self.port = free_port()
        app = create_app(world.settings, catalog, world.hints.publish)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        wait_for(lambda: self.server.started, 30, "the webhook endpoint")
        return f"http://127.0.0.1:{self.port}/webhooks/labelstudio"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
