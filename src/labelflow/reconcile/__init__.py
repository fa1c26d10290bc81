"""Reconciliation: the catalog converges to what each source says, with no person involved.

A source lists its truth (:mod:`labelflow.reconcile.listing`); the catalog's current state is
read in one pass; the two are compared set-wise (:mod:`labelflow.reconcile.drift`, a DuckDB
full outer join over Arrow tables), drift is classified, and repairs are emitted as events into
``annotations.raw`` (:mod:`labelflow.reconcile.reconciler`): the pipeline heals itself through
its normal path, never by writing the catalog around it. Every run is recorded
(:mod:`labelflow.reconcile.runs`).

This package's ``__init__`` imports nothing, so :mod:`labelflow.config` can import its settings.
"""
