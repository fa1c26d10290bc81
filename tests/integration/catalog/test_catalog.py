"""Catalog write semantics: newest revision wins in any order, idempotently, concurrently."""

from __future__ import annotations

import random
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from labelflow.catalog.store import Catalog, CatalogError, CatalogUnavailable
from support import free_port, make_version

pytestmark = pytest.mark.integration


def test_version_round_trips_with_lineage(catalog: Catalog) -> None:
    version = make_version("task-1", 4)
    assert catalog.upsert_version(version) is True
    assert catalog.get("task-1") == version
    assert catalog.history("task-1") == [version]


@pytest.mark.parametrize("order", [(1, 2), (2, 1)], ids=["in-order", "reversed"])
def test_older_revision_never_overwrites_newer(catalog: Catalog, order: tuple[int, int]) -> None:
    results = [catalog.upsert_version(make_version("t", r)) for r in order]
    assert results == ([True, True] if order == (1, 2) else [True, False])
    current = catalog.get("t")
    assert current is not None and current.revision == 2
    assert current.mask_hash == f"{2:064x}"
    state = catalog.state("t")
    assert state is not None and state.revision == 2 and state.mask_hash == f"{2:064x}"
    assert [v.revision for v in catalog.history("t")] == [1, 2]


def test_replaying_writes_is_idempotent(catalog: Catalog) -> None:
    def replay() -> list[bool]:
        return [
            catalog.upsert_version(make_version("t", 1)),
            catalog.upsert_version(make_version("u", 1)),
            catalog.tombstone("u", 2, reason="deleted"),
        ]

    first = replay()
    assert first == [True, True, True]
    assert [replay() for _ in range(2)] == [[True, False, True]] * 2, "u@1 is behind u@2"
    assert catalog.count() == 1
    assert catalog.count(include_deleted=True) == 2
    assert len(catalog.history("t")) == 1
    assert [t.revision for t in catalog.tombstones("u")] == [2]


def test_tombstone_deletes_only_at_or_after_current_revision(catalog: Catalog) -> None:
    catalog.upsert_version(make_version("t", 3))
    assert catalog.tombstone("t", 2, reason="rejected") is False
    assert catalog.get("t") is not None
    assert catalog.tombstone("t", 3, reason="rejected") is True
    assert catalog.get("t") is None
    state = catalog.state("t")
    assert state is not None and state.deleted and state.image_hash is None
    assert catalog.count() == 0
    assert [v.revision for v in catalog.history("t")] == [3], "history survives deletion"


def test_late_older_version_cannot_resurrect_but_newer_can(catalog: Catalog) -> None:
    assert catalog.tombstone("t", 5, reason="deleted") is True, "tombstone for an unseen sample"
    assert catalog.upsert_version(make_version("t", 4)) is False
    assert catalog.get("t") is None
    assert catalog.upsert_version(make_version("t", 6)) is True
    current = catalog.get("t")
    assert current is not None and current.revision == 6
    assert [v.revision for v in catalog.history("t")] == [4, 6]


@pytest.mark.parametrize("delete_first", [True, False])
def test_deletion_wins_a_tie_in_either_order(catalog: Catalog, delete_first: bool) -> None:
    writes = [
        lambda: catalog.tombstone("t", 2, reason="deleted"),
        lambda: catalog.upsert_version(make_version("t", 2)),
    ]
    for write in writes if delete_first else reversed(writes):
        write()
    assert catalog.get("t") is None
    state = catalog.state("t")
    assert state is not None and state.deleted and state.revision == 2


def test_list_pages_through_live_samples_in_id_order(catalog: Catalog) -> None:
    for i in range(5):
        catalog.upsert_version(make_version(f"s{i}", 1))
    catalog.tombstone("s2", 1)
    first = catalog.list(limit=2)
    second = catalog.list(after=first[-1].sample_id, limit=2)
    third = catalog.list(after=second[-1].sample_id, limit=2)
    assert [v.sample_id for v in first + second + third] == ["s0", "s1", "s3", "s4"]
    assert third == [] or len(third) <= 2


def test_states_reads_many_samples_live_and_deleted(catalog: Catalog) -> None:
    ids = [f"task-{i:04d}" for i in range(1200)]  # more than one chunk of ids
    for i, sample_id in enumerate(ids[:1100]):
        catalog.upsert_version(make_version(sample_id, 1 + i % 3))
    catalog.tombstone(ids[7], 10)
    states = {s.sample_id: s for s in catalog.states(ids)}
    assert len(states) == 1100  # never-seen ids are left out
    assert states[ids[5]].revision == 1 + 5 % 3
    assert not states[ids[5]].deleted
    assert states[ids[7]].deleted
    assert states[ids[7]].revision == 10


def test_concurrent_writers_converge_to_newest_revision(catalog: Catalog) -> None:
    """Eight threads replay a shuffled stream of versions and deletions of ten samples,
    each write twice; the catalog must end where the newest write of each sample says."""
    rng = random.Random(7)
    writes: list[tuple[str, int, bool]] = []
    expected: dict[str, tuple[int, bool]] = {}
    for s in range(10):
        sample = f"sample-{s}"
        revisions = list(range(1, 7))
        deleted_at = rng.choice([None, 3, 6])
        for r in revisions:
            writes.append((sample, r, r == deleted_at))
        expected[sample] = (6, deleted_at == 6)
    writes = writes * 2
    rng.shuffle(writes)

    def apply(write: tuple[str, int, bool]) -> None:
        sample, revision, delete = write
        if delete:
            catalog.tombstone(sample, revision)
        else:
            catalog.upsert_version(make_version(sample, revision))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(apply, writes, timeout=120))

    for sample, (revision, deleted) in expected.items():
        state = catalog.state(sample)
        assert state is not None
        assert (state.revision, state.deleted) == (revision, deleted), sample
        current = catalog.get(sample)
        assert (current is None) == deleted
        if current is not None:
            assert current.mask_hash == f"{revision:064x}"
    assert catalog.count() == sum(not d for _, d in expected.values())


def test_unmigrated_catalog_says_so(catalog_url: str) -> None:
    with Catalog(catalog_url) as cat, pytest.raises(CatalogError) as info:
        cat.get("t")
    assert info.value.code == "catalog.schema"
    assert info.value.transient is False


def test_unreachable_postgres_is_transient() -> None:
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none?connect_timeout=2"
    with Catalog(url) as cat, pytest.raises(CatalogUnavailable) as info:
        cat.count()
    assert info.value.code == "catalog.unavailable"
    assert info.value.transient is True


def test_locked_sqlite_is_transient(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    with Catalog(url, busy_timeout_s=0.2) as cat:
        cat.migrate()
        holder = sqlite3.connect(tmp_path / "catalog.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(CatalogUnavailable) as info:
                cat.upsert_version(make_version("t", 1))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert info.value.code == "catalog.unavailable"
        assert cat.upsert_version(make_version("t", 1)) is True, "works once the lock is gone"
