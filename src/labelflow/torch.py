"""A PyTorch map-style Dataset over a snapshot split (needs the ``torch`` extra).

    from torch.utils.data import DataLoader
    from labelflow.torch import SnapshotDataset

    data = SnapshotDataset("v3", split="train")
    for batch in DataLoader(data, batch_size=16, shuffle=True, num_workers=4):
        batch["image"], batch["mask"], batch["sample_id"]

Each item is ``{"image": uint8/float tensor (bands, h, w), "mask": int64 tensor (h, w),
"sample_id": str, "revision": int}``; ``transform`` (if given) receives and returns that dict.
The dataset holds no open file or thread: each DataLoader worker opens its own reader on
first use, so it pickles into worker processes with any start method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import torch
    from torch.utils.data import Dataset
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "labelflow.torch needs PyTorch: pip install 'labelflow[torch]' "
        "(labelflow.dataset reads snapshots without it)"
    ) from exc

from labelflow.config import Settings
from labelflow.dataset import SnapshotReader, open_snapshot

Item = dict[str, Any]


class SnapshotDataset(Dataset):
    """Samples of ``split`` of snapshot ``name`` by index, in sample-id order."""

    def __init__(
        self,
        name: str,
        split: str | None = "train",
        *,
        settings: Settings | None = None,
        transform: Callable[[Item], Item] | None = None,
    ) -> None:
        self.name = name
        self.split = split
        self.settings = settings
        self.transform = transform
        self._reader: SnapshotReader | None = None
        self._length = len(self._open())

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Item:
        sample = self._open()[index]
        item: Item = {
            "image": torch.from_numpy(sample.image),
            "mask": torch.from_numpy(sample.mask.astype("int64")),
            "sample_id": sample.metadata["sample_id"],
            "revision": sample.metadata["revision"],
        }
        return self.transform(item) if self.transform is not None else item

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"] = None  # each worker process opens its own
        return state

    def _open(self) -> SnapshotReader:
        if self._reader is None:
            # One thread: DataLoader workers are the parallelism here.
            self._reader = open_snapshot(self.name, self.split, settings=self.settings, threads=1)
        return self._reader
