"""Where annotations come from: Label Studio, annotation files, and a synthetic generator.

Every source yields :class:`~labelflow.model.AnnotationEvent`; nothing here talks to Kafka.
"""
