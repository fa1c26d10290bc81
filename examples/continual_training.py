"""Continual training on labelflow snapshots: train on v1, fine-tune on v2 = v1 + newer labels.

Runs on a laptop's CPU in a minute or two, with PyTorch (a two-layer convolutional
segmenter) or without it (the same loop with a per-pixel softmax classifier in numpy):

    .venv/bin/python examples/continual_training.py [--data-dir DIR] [--numpy]

1. Seeds a catalog in ``--data-dir`` (a temporary directory by default) with chips cut from
   the aerial COG ``../shared/data/imagery/cogeo.tif`` and masks labelled by brightness —
   the pipeline's stages would write the same rows and blobs — and publishes snapshot ``v1``.
2. Trains on v1's ``train`` split, evaluates on ``val``, and records the run
   (``labelflow runs record`` does the same from a shell).
3. New labels arrive: more chips, and revised masks for some old ones. Snapshot ``v2`` is
   published (gated against v1, its diff recorded).
4. Fine-tunes v1's model on v2's ``train`` split, evaluates on v2's ``val``, records the run.

The splits are spatial blocks, so a chip and its overlapping neighbour never end up one in
train and one in val; v1's samples keep their split in v2. See docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from labelflow.catalog.blobs import BlobStore
from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.dataset import open_snapshot
from labelflow.model import Lineage, SampleVersion
from labelflow.snapshots.runs import record_run
from labelflow.snapshots.settings import SnapshotSettings, SplitRules
from labelflow.snapshots.store import SnapshotStore

IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagery" / "cogeo.tif"
CLASSES = {"forest": 1, "rock": 2, "snow": 3}
CHIP = 96


# --- 1. a catalog to snapshot ---------------------------------------------------------------
def label(pixels: np.ndarray, snow_from: float) -> np.ndarray:
    """The "annotator": brightness bands (a stand-in for labels drawn in a labelling tool)."""
    brightness = pixels.astype(np.float32).mean(axis=0)
    mask = np.full(brightness.shape, CLASSES["rock"], np.uint8)
    mask[brightness < 90] = CLASSES["forest"]
    mask[brightness >= snow_from] = CLASSES["snow"]
    return mask


def commit_chips(
    settings: Settings, ids: range, revision: int, snow_from: float, seed: int
) -> None:
    """Chips ``ids`` at ``revision``, written as the commit stage would."""
    blobs = BlobStore.from_settings(settings)
    versions = []
    with rasterio.open(IMAGE) as src:
        for i in ids:
            rng = np.random.default_rng(seed + i)
            col, row = (int(v) for v in rng.integers(0, src.width - CHIP, 2))
            window = Window(col, row, CHIP, CHIP)
            pixels = src.read(window=window)
            transform = src.window_transform(window)
            mask = label(pixels, snow_from)
            bounds = rasterio.transform.array_bounds(CHIP, CHIP, transform)
            versions.append(
                SampleVersion(
                    sample_id=f"chip-{i:04d}",
                    revision=revision,
                    image_hash=blobs.put_raster(pixels, crs=str(src.crs), transform=transform),
                    mask_hash=blobs.put_raster(mask, crs=str(src.crs), transform=transform),
                    width=CHIP,
                    height=CHIP,
                    crs=str(src.crs),
                    transform=tuple(transform)[:6],
                    bounds=(bounds[0], bounds[1], bounds[2], bounds[3]),
                    class_pixels={n: int((mask == k).sum()) for n, k in CLASSES.items()},
                    lineage=Lineage(
                        source="example",
                        task_id=f"chip-{i:04d}",
                        revision=revision,
                        event_id=f"chip-{i}-{revision}",
                        image_uri=str(IMAGE),
                        image_content_hash="0" * 64,
                        code_version="example",
                        config_hash="example",
                    ),
                )
            )
    with Catalog(settings.resolved_catalog_url) as catalog:
        catalog.migrate()
        catalog.apply(versions)


def publish(settings: Settings, name: str) -> None:
    with Catalog(settings.resolved_catalog_url) as catalog:
        snapshot = SnapshotStore.from_settings(settings).create(name, catalog, settings)
    meta = snapshot.meta
    print(f"snapshot {name}: {meta.stats.splits}, parent {meta.parent}, diff {meta.diff}")
    for gate in meta.gates:
        print(f"  {gate.code}: {gate.status} ({gate.message})")


# --- 2. models ------------------------------------------------------------------------------
class NumpyModel:
    """Per-pixel softmax regression on RGB: the fallback when PyTorch is not installed."""

    def __init__(self, classes: int) -> None:
        self.w = np.zeros((4, classes), np.float64)

    def _features(self, image: np.ndarray) -> np.ndarray:
        x = image.reshape(image.shape[0], -1).T.astype(np.float64) / 255.0
        return np.hstack([x, np.ones((x.shape[0], 1))])

    def step(self, image: np.ndarray, mask: np.ndarray, lr: float = 0.5) -> float:
        x, y = self._features(image), mask.reshape(-1)
        p = self._softmax(x @ self.w)
        loss = -np.log(p[np.arange(len(y)), y] + 1e-9).mean()
        p[np.arange(len(y)), y] -= 1
        self.w -= lr * x.T @ p / len(y)
        return float(loss)

    def predict(self, image: np.ndarray) -> np.ndarray:
        return (self._features(image) @ self.w).argmax(1).reshape(image.shape[1:])

    @staticmethod
    def _softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


class TorchModel:
    """A two-layer convolutional segmenter, trained with Adam."""

    def __init__(self, classes: int) -> None:
        import torch

        self.torch = torch
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, classes, 1),
        )
        self.opt = torch.optim.Adam(self.net.parameters(), lr=0.01)

    def step(self, image: np.ndarray, mask: np.ndarray) -> float:
        t = self.torch
        x = t.from_numpy(image).float().div(255).unsqueeze(0)
        y = t.from_numpy(mask.astype(np.int64)).unsqueeze(0)
        self.opt.zero_grad()
        loss = t.nn.functional.cross_entropy(self.net(x), y)
        loss.backward()
        self.opt.step()
        return float(loss)

    def predict(self, image: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            x = self.torch.from_numpy(image).float().div(255).unsqueeze(0)
            return self.net(x)[0].argmax(0).numpy()


def train(model: Any, settings: Settings, snapshot: str, epochs: int) -> float:
    loss = float("nan")
    for epoch in range(epochs):
        # A seeded order per epoch; reader.state_dict() could checkpoint a long epoch.
        for image, mask, _ in open_snapshot(snapshot, "train", settings=settings, seed=epoch):
            loss = model.step(image, mask)
    return loss


def evaluate(model: Any, settings: Settings, snapshot: str) -> dict[str, float]:
    confusion = np.zeros((len(CLASSES) + 1,) * 2, np.int64)
    for image, mask, _ in open_snapshot(snapshot, "val", settings=settings):
        np.add.at(confusion, (mask.reshape(-1), model.predict(image).reshape(-1)), 1)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    present = union[1:] > 0
    iou = np.diag(confusion)[1:][present] / union[1:][present]
    return {
        "pixel_accuracy": round(float(np.trace(confusion) / max(confusion.sum(), 1)), 4),
        "miou": round(float(iou.mean()) if iou.size else 0.0, 4),
    }


def run(settings: Settings, model: Any, snapshot: str, name: str, epochs: int) -> None:
    loss = train(model, settings, snapshot, epochs)
    metrics = {"train_loss": round(loss, 4), **evaluate(model, settings, snapshot)}
    recorded = record_run(settings, snapshot, name, metrics)
    print(f"run {recorded.run_id}: {name} on {snapshot}: {json.dumps(metrics)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--numpy", action="store_true", help="Skip PyTorch even if installed.")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="labelflow-example-"))
    settings = Settings(
        data_dir=data_dir,
        taxonomy={"classes": CLASSES},
        # Chips here are ~60 m across: blocks of 250 m, a 10 m buffer, 70 % train / 30 % val.
        snapshots=SnapshotSettings(
            splits=SplitRules(block_size_m=250, buffer_m=10, fractions={"train": 0.7, "val": 0.3})
        ),
    )
    try:
        import torch  # noqa: F401

        use_torch = not args.numpy
    except ImportError:
        use_torch = False
    make = TorchModel if use_torch else NumpyModel
    print(f"data in {data_dir}; model: {'torch conv net' if use_torch else 'numpy softmax'}")

    # 1.
    commit_chips(settings, range(0, 80), revision=1, snow_from=190, seed=1)
    publish(settings, "v1")
    # 2.
    model = make(len(CLASSES) + 1)
    run(settings, model, "v1", f"{make.__name__}-v1", args.epochs)
    # 3. New chips, and the annotators moved the snow line on twenty old ones.
    commit_chips(settings, range(80, 110), revision=1, snow_from=190, seed=1)
    commit_chips(settings, range(0, 20), revision=2, snow_from=180, seed=1)
    publish(settings, "v2")
    # 4.
    run(settings, model, "v2", f"{make.__name__}-v1-finetuned-v2", max(1, args.epochs // 2))
    print(f"labelflow --data-dir {data_dir} runs list   # both runs and their snapshots")


if __name__ == "__main__":
    main()
