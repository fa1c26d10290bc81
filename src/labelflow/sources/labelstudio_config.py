"""A Label Studio project's classes, read from its labelling config.

``GET /api/projects/<id>`` returns the config as XML (``label_config``). The classes a mask can
hold are the ``<Label value="…"/>`` children of the region tags labelflow turns into pixels:
``PolygonLabels``, ``RectangleLabels`` and ``BrushLabels``. Other region tags (ellipses,
keypoints …) are reported, so a project that uses them knows those regions will be refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree

from labelflow.sources.base import SourceFormatError

MASK_TAGS = ("polygonlabels", "rectanglelabels", "brushlabels")
"""Region tags whose regions become mask pixels (compared lower-case)."""


@dataclass(frozen=True)
class LabelConfig:
    classes: list[str]
    """Label values of the mask tags, in the order the config lists them, each once."""
    other_tags: list[str]
    """Other ``…Labels`` tags in the config: their regions are not rasterized."""


def parse_label_config(xml: str) -> LabelConfig:
    """The classes of a labelling config; ``labelstudio.label_config_invalid`` if unreadable."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise SourceFormatError(
            "labelstudio.label_config_invalid", f"the project's label config is not XML: {exc}"
        ) from exc
    classes: list[str] = []
    other: list[str] = []
    for element in root.iter():
        tag = element.tag.lower()
        if tag in MASK_TAGS:
            for label in element.iter():
                value = label.get("value")
                if label.tag.lower() == "label" and value and value not in classes:
                    classes.append(value)
        elif tag.endswith("labels") and tag != "labels" and element.tag not in other:
            other.append(element.tag)
    return LabelConfig(classes=classes, other_tags=other)
