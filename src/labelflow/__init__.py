"""labelflow: continuous, reliable, lineage-tracked training datasets on Apache Kafka."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("labelflow")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
