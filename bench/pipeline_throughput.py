"""Throughput and latency of the whole pipeline vs the same work done in one plain process.

For each chip size, the same seeded annotation events (1-3 polygons on a window of a real
aerial COG) go through:

(a) direct: one process, no Kafka, doing each sample's work with the calls the stages make:
    the validate rules (parse, catalog lookup, checks), the windowed read through labelflow's
    imagery provider, the mask, the sample checks, chip and mask encoded as GeoTIFF, sha256
    plus durable blob writes (write, fsync, rename), one catalog upsert. Every step is timed.
(b) pipeline: a private local broker and one worker process per stage (validate, materialize,
    commit) started like the demo does; after a short warm-up the events are published to
    ``annotations.raw`` at once, and samples/s is counted from the first publish to the last
    commit in the catalog. Per-stage time shares come from the totals the runner logs when a
    worker stops (``process_s``: in the stage's code, ``commit_s``: committing), else "n/a".
(c) latency: new events published at half the rate (b) measured, for a while; each event's
    latency is its commit time in the catalog minus its publish time.

The ratio pipeline/direct says what the pipeline's guarantees cost (target >= 0.8); p99 at
half the maximum rate says whether a sample reaches the catalog promptly (target <= 3 s).

    .venv/bin/python bench/pipeline_throughput.py [--events N] [--sizes 256,512] [--quick]
                                                  [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import random
import shutil
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import rasterio
from affine import Affine
from rich.console import Console
from rich.table import Table

from labelflow.catalog.blobs import BlobStore, encode_geotiff
from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.imagery.providers import Imagery
from labelflow.masks import class_pixel_counts, rasterize_event
from labelflow.model import (
    AnnotationEvent,
    Feature,
    ImageRef,
    Lineage,
    SampleVersion,
    Status,
    Taxonomy,
)
from labelflow.quality.annotations import parse_raw, validate_event
from labelflow.quality.samples import all_passed, check_sample
from labelflow.service import LocalPipeline
from labelflow.sources.publish import RawPublisher
from labelflow.stages import PIPELINE_STAGES

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "imagery" / "cogeo.tif"

STEPS = ("validate", "read", "rasterize", "checks", "encode", "hash+write", "db")
"""The direct run's timed steps, in the order a sample goes through them."""

TARGET_RATIO = 0.8
TARGET_P99_S = 3.0

WARMUP_EVENTS = 12
"""Published and committed before the pipeline's clock starts: joining the consumer groups,
importing GDAL and migrating the catalog happen once per worker, not per sample."""

OTHERS_NOTE_CORES = 0.25
"""Other processes using more CPU than this during the direct run make its rate (the
baseline of the ratio) lower than on a quiet machine; the report says so."""

STALL_TIMEOUT_S = 60.0
"""Waiting for the catalog gives up when its count has not moved for this long: a crashed
or wedged stage must end the benchmark with a partial result, not hang it."""


def _cpu_busy_s() -> float | None:
    """CPU seconds every process on this machine has used so far (Linux), else None."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    busy = user + nice + system + irq + softirq + steal
    return busy / os.sysconf("SC_CLK_TCK")


# --- events ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Image:
    path: Path
    width: int
    height: int
    transform: Affine

    @classmethod
    def open(cls, path: Path) -> Image:
        with rasterio.open(path) as src:
            return cls(path, src.width, src.height, src.transform)

    def window_bounds(self, col: int, row: int, size: int) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` in the image's CRS of a ``size`` px window at
        ``col``/``row``: exactly on pixel edges, so the provider reads ``size`` x ``size``."""
        west, north = self.transform * (col, row)
        east, south = self.transform * (col + size, row + size)
        return (min(west, east), min(south, north), max(west, east), max(south, north))


def _polygon(rng: random.Random, size: int) -> dict[str, Any]:
    """A star-shaped (hence simple) polygon inside a ``size`` px chip, pixel coordinates."""
    radius = rng.uniform(0.05, 0.25) * size
    cx = rng.uniform(radius + 1, size - radius - 1)
    cy = rng.uniform(radius + 1, size - radius - 1)
    corners = rng.randint(3, 8)
    step = 2 * math.pi / corners
    ring = []
    for i in range(corners):
        angle = step * (i + rng.uniform(-0.3, 0.3))  # jitter stays inside the sector: monotone
        r = radius * rng.uniform(0.5, 1.0)
        ring.append([round(cx + r * math.cos(angle), 2), round(cy + r * math.sin(angle), 2)])
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def make_events(
    image: Image, taxonomy: Taxonomy, size: int, count: int, seed: int, tag: str
) -> list[AnnotationEvent]:
    """``count`` approved revisions, each a chip at a random position of ``image``."""
    rng = random.Random(f"{seed}-{size}-{tag}")
    classes = sorted(taxonomy.classes)
    events = []
    for i in range(count):
        col = rng.randint(0, image.width - size)
        row = rng.randint(0, image.height - size)
        features = [
            Feature(label=rng.choice(classes), geometry=_polygon(rng, size), feature_id=str(k))
            for k in range(rng.randint(1, 3))
        ]
        events.append(
            AnnotationEvent(
                source="bench",
                task_id=f"bench-{tag}-{size}-{i:06d}",
                revision=1,
                status=Status.APPROVED,
                features=features,
                image=ImageRef(
                    uri=str(image.path),
                    bounds=image.window_bounds(col, row, size),
                    width=size,
                    height=size,
                ),
                annotator="bench",
            )
        )
    return events


# --- (a) direct --------------------------------------------------------------------------
@dataclass
class DirectResult:
    samples: int
    seconds: float
    step_s: dict[str, float]
    others_cores: float | None = None
    """CPU cores other processes kept busy meanwhile, on average."""

    @property
    def rate(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    @property
    def shares(self) -> dict[str, float]:
        total = sum(self.step_s.values()) or 1.0
        return {step: s / total for step, s in self.step_s.items()}


def run_direct(events: Sequence[AnnotationEvent], work_dir: Path) -> DirectResult:
    """Every sample's work in this process, timed per step (see the module docstring)."""
    settings = Settings(data_dir=work_dir)
    catalog = Catalog(f"sqlite:///{work_dir / 'catalog.db'}")
    catalog.migrate()
    blobs = BlobStore(work_dir / "blobs")
    step_s = dict.fromkeys(STEPS, 0.0)
    raws = [event.model_dump_json().encode() for event in events]  # as a producer sends them
    samples = 0
    clock = time.perf_counter
    with Imagery(settings) as imagery:
        busy_before, cpu_before = _cpu_busy_s(), time.process_time()
        started = clock()
        for raw in raws:
            t0 = clock()
            event = parse_raw(raw, settings.validation)
            assert isinstance(event, AnnotationEvent), event
            state = catalog.state(event.task_id)
            violations = validate_event(
                event,
                settings.taxonomy,
                settings.validation,
                last_revision=state.revision if state else None,
            )
            assert not violations, violations
            assert event.image is not None
            t1 = clock()
            chip = imagery.read(event.image)
            t2 = clock()
            mask = rasterize_event(event, chip, settings.taxonomy)
            class_pixels = class_pixel_counts(mask, settings.taxonomy)
            t3 = clock()
            checks = check_sample(chip, mask, settings.sample_rules)
            passed = all_passed(checks)
            t4 = clock()
            step_s["validate"] += t1 - t0
            step_s["read"] += t2 - t1
            step_s["rasterize"] += t3 - t2
            step_s["checks"] += t4 - t3
            if not passed:  # the pipeline quarantines these: no sample on either side
                continue
            image_bytes = encode_geotiff(
                chip.pixels, crs=chip.crs, transform=chip.transform, nodata=chip.nodata
            )
            mask_bytes = encode_geotiff(mask, crs=chip.crs, transform=chip.transform)
            t5 = clock()
            image_hash, mask_hash = blobs.put(image_bytes), blobs.put(mask_bytes)
            t6 = clock()
            catalog.upsert_version(
                SampleVersion(
                    sample_id=event.task_id,
                    revision=event.revision,
                    image_hash=image_hash,
                    mask_hash=mask_hash,
                    width=chip.width,
                    height=chip.height,
                    crs=chip.crs,
                    transform=tuple(chip.transform)[:6],
                    bounds=chip.bounds,
                    class_pixels=class_pixels,
                    features=event.features,
                    checks=checks,
                    lineage=Lineage(
                        source=event.source,
                        task_id=event.task_id,
                        revision=event.revision,
                        event_id=event.event_id,
                        image_uri=event.image.uri,
                        image_content_hash=chip.content_hash,
                        code_version="bench",
                        config_hash=settings.pipeline_config_hash,
                    ),
                )
            )
            t7 = clock()
            step_s["encode"] += t5 - t4
            step_s["hash+write"] += t6 - t5
            step_s["db"] += t7 - t6
            samples += 1
        seconds = clock() - started
        busy_after, cpu_after = _cpu_busy_s(), time.process_time()
    catalog.close()
    others = None
    if busy_before is not None and busy_after is not None and seconds > 0:
        others = max(0.0, (busy_after - busy_before - (cpu_after - cpu_before)) / seconds)
    return DirectResult(samples, seconds, step_s, others)


# --- (b), (c) pipeline -------------------------------------------------------------------
@dataclass
class StageTotals:
    """What one stage's workers logged on stop: records handled, seconds in the stage's own
    code, and seconds committing transactions (``None`` where the runner does not log it)."""

    records: int = 0
    process_s: float = 0.0
    commit_s: float | None = None
    commits: int | None = None

    def parts(self) -> dict[str, float]:
        parts = {"process": self.process_s}
        if self.commit_s is not None:
            parts["commit"] = self.commit_s
        return parts


@dataclass
class PipelineResult:
    published: int = 0
    committed: int = 0
    seconds: float = 0.0
    stages: dict[str, StageTotals] | None = None
    worker_restarts: int = 0
    cores_busy: float | None = None
    """CPU cores busy on the machine (the workers, the broker, this process and any other)
    while the events went through, on average."""
    latency_rate_per_s: float = 0.0
    latency_published: int = 0
    latency_committed: int = 0
    latencies_s: list[float] = field(default_factory=list)
    """In publish order, of the paced events that were committed."""
    latency_cores_busy: float | None = None

    @property
    def rate(self) -> float:
        return self.committed / self.seconds if self.seconds else 0.0

    @property
    def stage_shares(self) -> dict[str, float] | None:
        """``"<stage> <process|commit>"``: its share of all the stages' logged seconds."""
        if not self.stages:
            return None
        parts = {
            f"{stage} {part}": seconds
            for stage, totals in self.stages.items()
            for part, seconds in totals.parts().items()
        }
        total = sum(parts.values()) or 1.0
        return {name: seconds / total for name, seconds in parts.items()}

    def latency_trend(self, parts: int = 10) -> list[float]:
        """Median latency of each tenth of the paced phase: rising means a backlog built up
        (the rate was not sustainable then), a bump means a hiccup (a rebalance, a stall)."""
        n = len(self.latencies_s)
        if n < parts:
            return []
        cuts = [round(i * n / parts) for i in range(parts + 1)]
        return [statistics.median(self.latencies_s[a:b]) for a, b in itertools.pairwise(cuts)]

    def latency(self, pct: int) -> float | None:
        values = sorted(self.latencies_s)
        if len(values) < 2:
            return values[0] if values else None
        return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _commit_times(catalog: Catalog, task_ids: Sequence[str]) -> dict[str, float]:
    """Commit time (epoch seconds) of each of ``task_ids`` the catalog holds live."""
    return {
        s.sample_id: s.updated_at.timestamp() for s in catalog.states(task_ids) if not s.deleted
    }


def _wait_committed(
    pipeline: LocalPipeline, target: int, on_wait: Callable[[int], None] | None = None
) -> int:
    """Poll the catalog until it holds ``target`` samples or stops growing; restart crashed
    workers meanwhile, as ``labelflow up`` does. Returns the last count seen."""
    count, last_change = -1, time.monotonic()
    while True:
        now_count = pipeline.catalog.count()
        if now_count != count:
            count, last_change = now_count, time.monotonic()
            if on_wait:
                on_wait(count)
        if count >= target or time.monotonic() - last_change > STALL_TIMEOUT_S:
            return count
        pipeline.supervisor.check()
        time.sleep(0.1)


def run_pipeline(
    events: Sequence[AnnotationEvent],
    expected: int,
    latency_events: Callable[[int], list[AnnotationEvent]],
    latency_s: float,
    warmup: Sequence[AnnotationEvent],
    data_dir: Path,
    console: Console,
) -> PipelineResult:
    """(b) and (c) on a fresh broker and fresh workers under ``data_dir``."""
    settings = Settings(
        data_dir=data_dir, kafka_port=_free_port(), kafka_controller_port=_free_port()
    )
    result = PipelineResult()
    pipeline = LocalPipeline(settings, dict.fromkeys(PIPELINE_STAGES, 1))
    pipeline.start(console)
    try:
        publisher = RawPublisher(settings)
        with console.status("pipeline: warming up") as status:
            for event in warmup:
                publisher.publish(event)
            publisher.flush()
            base = _wait_committed(pipeline, len(warmup))
            if base < len(warmup):
                raise RuntimeError(f"warm-up: only {base}/{len(warmup)} samples committed")

            # (b) everything at once, timed from the first publish to the last commit.
            status.update(f"pipeline: publishing {len(events)} events")
            first_publish, busy_before = time.time(), _cpu_busy_s()
            for event in events:
                publisher.publish(event)
            publisher.flush()
            result.published = len(events)
            _wait_committed(
                pipeline,
                base + expected,
                lambda n: status.update(f"pipeline: {n - base}/{expected} samples committed"),
            )
            done = _commit_times(pipeline.catalog, [e.task_id for e in events])
            result.committed = len(done)
            busy_after, wall = _cpu_busy_s(), time.time() - first_publish
            if busy_before is not None and busy_after is not None:
                result.cores_busy = (busy_after - busy_before) / wall
            if done:
                result.seconds = max(done.values()) - first_publish

            # (c) half that rate, paced, each event's publish time kept.
            rate = result.rate / 2
            if rate > 0:
                paced = latency_events(max(5, round(rate * latency_s)))
                result.latency_rate_per_s = rate
                status.update(f"pipeline: {len(paced)} events at {rate:.1f}/s for latency")
                sent: dict[str, float] = {}
                start, busy_before = time.monotonic(), _cpu_busy_s()
                for i, event in enumerate(paced):
                    while (wait := start + i / rate - time.monotonic()) > 0:
                        time.sleep(min(wait, 0.05))
                    sent[event.task_id] = time.time()
                    publisher.publish(event)
                publisher.flush()
                busy_after, wall = _cpu_busy_s(), time.monotonic() - start
                if busy_before is not None and busy_after is not None:
                    result.latency_cores_busy = (busy_after - busy_before) / wall
                result.latency_published = len(paced)
                status.update("pipeline: waiting for the last paced samples")
                _wait_committed(pipeline, base + result.committed + len(paced))
                committed = _commit_times(pipeline.catalog, list(sent))
                result.latency_committed = len(committed)
                result.latencies_s = [
                    max(0.0, committed[tid] - at) for tid, at in sent.items() if tid in committed
                ]
        pipeline.stop_workers()  # the runner logs its totals on a graceful stop
        result.worker_restarts = sum(w.restarts for w in pipeline.supervisor.workers)
        result.stages = stage_totals(pipeline.log_dir)
    finally:
        pipeline.close(console)
    return result


def stage_totals(log_dir: Path) -> dict[str, StageTotals] | None:
    """Per stage, the totals its workers logged last (the runner logs them on stop) in lines
    carrying a ``process_s`` field; ``None`` if no worker logged one."""
    out: dict[str, StageTotals] = {}
    for log in sorted(log_dir.glob("*.log")):
        last: dict[str, Any] | None = None
        for line in log.read_text(errors="replace").splitlines():
            if '"process_s"' not in line:
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("process_s"), int | float):
                last = doc
        if last is None:
            continue
        totals = out.setdefault(str(last.get("stage") or log.stem.rsplit("-", 1)[0]), StageTotals())
        totals.records += int(last.get("records") or 0)
        totals.process_s += float(last["process_s"])
        if isinstance(last.get("commit_s"), int | float):
            totals.commit_s = (totals.commit_s or 0.0) + float(last["commit_s"])
            totals.commits = (totals.commits or 0) + int(last.get("commits") or 0)
    return out or None


# --- report ------------------------------------------------------------------------------
@dataclass
class SizeResult:
    size: int
    events: int
    direct: DirectResult
    pipeline: PipelineResult

    @property
    def ratio(self) -> float:
        return self.pipeline.rate / self.direct.rate if self.direct.rate else 0.0

    def as_json(self) -> dict[str, Any]:
        p = self.pipeline
        return {
            "chip_size": self.size,
            "events": self.events,
            "direct": {
                "samples": self.direct.samples,
                "seconds": round(self.direct.seconds, 3),
                "samples_per_s": round(self.direct.rate, 2),
                "step_s": {k: round(v, 3) for k, v in self.direct.step_s.items()},
                "step_shares": {k: round(v, 4) for k, v in self.direct.shares.items()},
                "other_processes_cores": _round(self.direct.others_cores),
            },
            "pipeline": {
                "published": p.published,
                "committed": p.committed,
                "seconds": round(p.seconds, 3),
                "samples_per_s": round(p.rate, 2),
                "stages": (
                    {k: asdict(v) for k, v in p.stages.items()} if p.stages is not None else None
                ),
                "stage_shares": (
                    {k: round(v, 4) for k, v in p.stage_shares.items()} if p.stage_shares else None
                ),
                "worker_restarts": p.worker_restarts,
                "cores_busy": _round(p.cores_busy),
            },
            "ratio_pipeline_direct": round(self.ratio, 3),
            "latency": {
                "rate_per_s": round(p.latency_rate_per_s, 2),
                "published": p.latency_published,
                "committed": p.latency_committed,
                "p50_s": _round(p.latency(50)),
                "p99_s": _round(p.latency(99)),
                "max_s": _round(max(p.latencies_s, default=None)),
                "median_by_tenth_s": [round(v, 3) for v in p.latency_trend()],
                "cores_busy": _round(p.latency_cores_busy),
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _mark(ok: bool) -> str:
    return "[green]✓[/]" if ok else "[red]✗[/]"


def report(results: list[SizeResult], console: Console) -> None:
    table = Table(title="Samples/s, one worker per stage; latency at half the pipeline's rate")
    for column in ("chip", "direct/s", "pipeline/s", "pipeline/direct", "p50", "p99"):
        table.add_column(column, justify="right")
    for r in results:
        p = r.pipeline
        incomplete = p.committed < r.direct.samples
        p99 = p.latency(99)
        table.add_row(
            f"{r.size} px",
            f"{r.direct.rate:.1f}",
            f"{p.rate:.1f}" + (f" ({p.committed}/{r.direct.samples})" if incomplete else ""),
            f"{r.ratio:.2f} {_mark(r.ratio >= TARGET_RATIO)}",
            _fmt_s(p.latency(50)),
            f"{_fmt_s(p99)} {_mark(p99 is not None and p99 <= TARGET_P99_S)}",
        )
    table.caption = f"targets: pipeline/direct >= {TARGET_RATIO}, p99 <= {TARGET_P99_S:g} s"
    console.print(table)

    steps = Table(title="Share of processing time (ms per sample)")
    steps.add_column("")
    for r in results:
        steps.add_column(f"{r.size} px", justify="right")
    for step in STEPS:
        steps.add_row(
            f"direct: {step}",
            *(
                f"{r.direct.shares[step]:.0%} ({_ms(r.direct.step_s[step], r.direct.samples)})"
                for r in results
            ),
        )
    steps.add_row(
        "direct: total",
        *(f"({_ms(sum(r.direct.step_s.values()), r.direct.samples)})" for r in results),
        end_section=True,
    )
    stages = sorted(
        {s for r in results for s in (r.pipeline.stages or {})},
        key=lambda s: PIPELINE_STAGES.index(s) if s in PIPELINE_STAGES else len(PIPELINE_STAGES),
    )
    for stage in stages:
        for part in ("process", "commit"):
            cells = [_stage_cell(r.pipeline, stage, part) for r in results]
            if any(cell != "n/a" for cell in cells):
                steps.add_row(f"pipeline: {stage} {part}", *cells)
    if stages:
        steps.caption = (
            "pipeline: each stage's time in its own code (process) and in committing its "
            "transactions (commit), per record; shares of all stages' time"
        )
    else:
        steps.add_row("pipeline: per stage", *("n/a" for _ in results))
        steps.caption = "n/a: the workers' logs carry no processing totals (process_s)"
    console.print(steps)
    for r in results:
        others, busy = r.direct.others_cores, r.pipeline.cores_busy
        if others is not None and others > OTHERS_NOTE_CORES:
            console.print(
                f"[yellow]{r.size} px: other processes kept {others:.1f} cores busy during the "
                "direct run; its rate, and so the ratio, is off by that much noise[/]"
            )
        if busy is not None:
            console.print(
                f"{r.size} px pipeline: {busy:.1f} of {os.cpu_count()} cores busy on the machine "
                "while the events went through"
            )
        if trend := r.pipeline.latency_trend():
            busy = r.pipeline.latency_cores_busy
            console.print(
                f"{r.size} px latency, median per tenth of the paced phase: "
                + " ".join(f"{v:.2f}" for v in trend)
                + " s"
                + (f" ({busy:.1f} cores busy)" if busy is not None else "")
            )


def _stage_cell(pipeline: PipelineResult, stage: str, part: str) -> str:
    shares = pipeline.stage_shares or {}
    totals = (pipeline.stages or {}).get(stage)
    name = f"{stage} {part}"
    if totals is None or name not in shares:
        return "n/a"
    return f"{shares[name]:.0%} ({_ms(totals.parts()[part], totals.records)})"


def _ms(seconds: float, samples: int) -> str:
    return f"{seconds / samples * 1000:.1f} ms" if samples else "n/a"


# --- main --------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, help="events per chip size (default 600; quick 100)")
    parser.add_argument("--sizes", default="256,512", help="chip sizes in px, comma-separated")
    parser.add_argument("--latency-s", type=float, help="paced phase length (default 20; quick 6)")
    parser.add_argument("--quick", action="store_true", help="a smaller run, about a minute")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a GeoTIFF / COG")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    args = parser.parse_args()
    count = args.events or (100 if args.quick else 600)
    latency_s = args.latency_s or (6.0 if args.quick else 20.0)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    console = Console()
    image = Image.open(args.image)
    if any(size > min(image.width, image.height) for size in sizes):
        parser.error(f"chip sizes must fit {args.image} ({image.width}x{image.height} px)")
    taxonomy = Settings().taxonomy
    work = Path(tempfile.mkdtemp(prefix="labelflow-bench-"))
    console.print(
        f"{count} events per size, chips {sizes} px of {image.path.name}; "
        f"one worker per stage; data under {work}"
    )
    results: list[SizeResult] = []
    try:
        for size in sizes:
            events = make_events(image, taxonomy, size, count, args.seed, "t")
            with console.status(f"direct: {count} samples of {size} px"):
                direct = run_direct(events, work / f"direct-{size}")
            console.print(f"{size} px direct: {direct.rate:.1f} samples/s")
            pipeline = run_pipeline(
                events,
                direct.samples,
                lambda n, size=size: make_events(image, taxonomy, size, n, args.seed, "lat"),
                latency_s,
                make_events(image, taxonomy, size, WARMUP_EVENTS, args.seed, "warm"),
                work / f"pipeline-{size}",
                console,
            )
            console.print(
                f"{size} px pipeline: {pipeline.rate:.1f} samples/s "
                f"({pipeline.committed}/{direct.samples} committed)"
            )
            results.append(SizeResult(size, count, direct, pipeline))
    finally:
        if args.keep:
            console.print(f"data kept under {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(results, console)
    if args.json:
        figures = {
            "config": {
                "events_per_size": count,
                "sizes": sizes,
                "latency_phase_s": latency_s,
                "seed": args.seed,
                "image": str(image.path),
                "image_sha256": hashlib.sha256(image.path.read_bytes()).hexdigest(),
                "workers_per_stage": 1,
                "cpu_count": os.cpu_count(),
                "warmup_events": WARMUP_EVENTS,
                "targets": {"ratio_min": TARGET_RATIO, "latency_p99_max_s": TARGET_P99_S},
            },
            "results": [r.as_json() for r in results],
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        console.print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
