"""Snapshots: immutable, named dataset versions made from the catalog's current samples.

- :mod:`.settings`: the rules (splits, buffer, quality gates), one field of the settings;
- :mod:`.splits`: train / val / test by spatial block, with a buffer between splits;
- :mod:`.manifest`: reading the catalog into a columnar manifest, its statistics;
- :mod:`.gates`: the quality gates a snapshot must pass before it is published;
- :mod:`.diff`: what was added, removed or changed between two manifests;
- :mod:`.store`: the snapshot directories (atomic create, list, open);
- :mod:`.export`, :mod:`.runs`, :mod:`.cli`: exports, training runs, the command line.

Importing this package imports nothing heavy: :mod:`labelflow.config` reads its settings.
"""
