"""``python -m labelflow``: the same as the ``labelflow`` command."""

from labelflow.cli import main

main()
