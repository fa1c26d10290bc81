"""The pipeline's stages, one module each, each exposing ``STAGE`` for ``labelflow run NAME``.

    sources.changes ─ labelstudio ─▶ annotations.raw
    annotations.raw ─ validate ─▶ annotations.valid ─ materialize ─▶ samples.ready ─ commit
                          └─▶ annotations.quarantine ◀──────┘

Importing this package registers the pipeline's event schemas with the envelope, so every
worker can decode every topic.
"""

from labelflow.events import register
from labelflow.model import (
    ANNOTATION_SCHEMA,
    ANNOTATION_SCHEMA_VERSION,
    SAMPLE_SCHEMA,
    SAMPLE_SCHEMA_VERSION,
    AnnotationEvent,
    Quarantined,
    SampleRemoval,
    SampleVersion,
)
from labelflow.sources.labelstudio import TaskChanged

register(ANNOTATION_SCHEMA, ANNOTATION_SCHEMA_VERSION)(AnnotationEvent)
register(SAMPLE_SCHEMA, SAMPLE_SCHEMA_VERSION)(SampleVersion)
register("labelflow.sample-removal", 1)(SampleRemoval)
register("labelflow.quarantined", 1)(Quarantined)
register("labelflow.task-changed", 1)(TaskChanged)

PIPELINE_STAGES = ("validate", "materialize", "commit")
"""The stages every running pipeline has, in flow order; ``labelflow up`` adds the source
stages that are configured (``labelstudio``), the demo feeds them synthetic events itself."""
