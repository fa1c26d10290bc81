"""The synthetic history: deterministic, realistically unruly, and its expected state holds."""

from __future__ import annotations

from collections import Counter

from labelflow.model import Taxonomy
from labelflow.quality.annotations import validate_raw
from labelflow.sources.synthetic import ExpectedTask, SyntheticConfig, generate

UNRULY = SyntheticConfig(
    seed=7,
    tasks=60,
    reject_fraction=0.3,
    delete_fraction=0.3,
    duplicate_fraction=0.3,
    out_of_order_fraction=0.5,
    bad_fraction=0.3,
    rate_per_s=10.0,
)


def _replay(config: SyntheticConfig) -> dict[str, ExpectedTask]:
    """A minimal pipeline: validate each delivery, keep the newest valid revision per task."""
    newest: dict[str, tuple[int, bool]] = {}
    for delivery in generate(config).deliveries:
        event, violations = validate_raw(delivery.value, Taxonomy())
        if event is None or violations:
            continue
        if event.task_id not in newest or event.revision > newest[event.task_id][0]:
            newest[event.task_id] = (event.revision, not event.removes_sample)
    return {
        task: ExpectedTask(task_id=task, revision=rev, sample=sample)
        for task, (rev, sample) in newest.items()
    }


def test_same_seed_same_history_byte_for_byte() -> None:
    assert generate(UNRULY) == generate(UNRULY)
    other = generate(UNRULY.model_copy(update={"seed": 8}))
    assert other.deliveries != generate(UNRULY).deliveries


def test_history_contains_every_kind_of_trouble() -> None:
    history = generate(UNRULY)
    kinds = Counter(d.kind for d in history.deliveries)
    assert kinds["revision"] > 0 and kinds["duplicate"] > 0 and kinds["bad"] > 0
    events = [validate_raw(d.value, Taxonomy())[0] for d in history.deliveries]
    assert {e.status for e in events if e} >= {"submitted", "approved", "rejected", "deleted"}
    reordered = 0
    last: dict[str, int] = {}
    for d in history.deliveries:
        event, _ = validate_raw(d.value, Taxonomy())
        if event is not None and d.kind == "revision":
            reordered += event.revision < last.get(d.task_id, -1)
            last[d.task_id] = max(event.revision, last.get(d.task_id, -1))
    assert reordered > 0


def test_good_deliveries_pass_and_bad_ones_get_exactly_their_code() -> None:
    for delivery in generate(UNRULY).deliveries:
        _, violations = validate_raw(delivery.value, Taxonomy())
        if delivery.kind == "bad":
            assert [v.code for v in violations] == [delivery.expected_code], delivery
        else:
            assert violations == [], delivery


def test_expected_state_matches_an_independent_replay() -> None:
    history = generate(UNRULY)
    replayed = _replay(UNRULY)
    with_revision = {k: v for k, v in history.expected.items() if v.revision is not None}
    assert with_revision == replayed
    assert any(not e.sample for e in with_revision.values())
    assert any(e.sample for e in with_revision.values())


def test_images_are_synthetic_scenes_and_deliveries_follow_the_rate() -> None:
    config = SyntheticConfig(seed=1, tasks=5, scene_size=128, rate_per_s=4.0, bad_fraction=0)
    history = generate(config)
    events = [validate_raw(d.value, Taxonomy())[0] for d in history.deliveries]
    images = {e.image for e in events if e and e.image}
    assert {i.uri for i in images} == {f"synthetic://{s}" for s in history.scenes}
    assert {(i.provider, i.width, i.height) for i in images} == {("synthetic", 128, 128)}
    assert [d.at_s for d in history.deliveries] == [i / 4.0 for i in range(len(events))]
