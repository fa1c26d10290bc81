"""The pipeline's stages, one module each, each exposing ``STAGE`` for ``labelflow run NAME``.

    sources.changes ─ labelstudio ─▶ annotations.raw
    annotations.raw ─ validate ─▶ annotations.valid ─ materialize ─▶ samples.ready ─ commit
                          └─▶ annotations.quarantine ◀──────┘

Each stage declares what it reads and writes, and a ``setup`` that builds its processor from
the worker's settings; the event schemas are registered where their models are defined.
"""

PIPELINE_STAGES = ("validate", "materialize", "commit")
"""The stages every running pipeline has, in flow order; ``labelflow up`` adds the source
stages that are configured (``labelstudio``), the demo feeds them synthetic events itself."""
