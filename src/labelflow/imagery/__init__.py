"""Imagery providers: pixels and georeference for an :class:`~labelflow.model.ImageRef`."""
