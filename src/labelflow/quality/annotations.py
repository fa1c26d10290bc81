"""Annotation-level quality rules: what can be judged from an event alone, without pixels.

Every rule returns data, never raises: a list of :class:`Reason` with a stable ``code``
(what the quarantine topic, metrics and dashboards group by) and a human ``message`` (what a
person reads to fix the annotation). An empty list means the event may go on to
``materialize``. Rules that need the imagery (missing file, corrupt GeoTIFF, a CRS the image
does not have) belong to that stage; see ``tests/fixtures/bad_inputs`` for both kinds.

Per feature, checks run from structure to semantics and stop at the first failure, so one
broken polygon reports one cause (a bow-tie is a self-intersection, not also "too small").
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from rasterio.crs import CRS
from rasterio.errors import CRSError
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from labelflow.events import MAX_EVENT_BYTES
from labelflow.model import AnnotationEvent, CoordSpace, Feature, Reason, Taxonomy

POLYGONAL = ("Polygon", "MultiPolygon")
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQUATOR = 111_320.0


class Code(StrEnum):
    """Stable reason codes. Renaming one breaks quarantine dashboards and replays: add, never
    rename."""

    PAYLOAD_TOO_LARGE = "payload.too_large"
    PAYLOAD_ENCODING = "payload.encoding"
    SCHEMA_MALFORMED_JSON = "schema.malformed_json"
    SCHEMA_TOO_DEEP = "schema.too_deep"
    SCHEMA_NOT_OBJECT = "schema.not_object"
    SCHEMA_MISSING_FIELD = "schema.missing_field"
    SCHEMA_WRONG_TYPE = "schema.wrong_type"
    SCHEMA_UNKNOWN_VALUE = "schema.unknown_value"
    SCHEMA_OUT_OF_RANGE = "schema.out_of_range"
    SCHEMA_INVALID_VALUE = "schema.invalid_value"
    SCHEMA_UNSUPPORTED_VERSION = "schema.unsupported_version"
    SCHEMA_INVALID = "schema.invalid"
    FEATURES_TOO_MANY = "features.too_many"
    GEOMETRY_UNSUPPORTED_TYPE = "geometry.unsupported_type"
    GEOMETRY_MALFORMED = "geometry.malformed"
    GEOMETRY_EMPTY = "geometry.empty"
    GEOMETRY_NON_FINITE = "geometry.non_finite"
    GEOMETRY_UNCLOSED_RING = "geometry.unclosed_ring"
    GEOMETRY_TOO_FEW_POINTS = "geometry.too_few_points"
    GEOMETRY_TOO_MANY_VERTICES = "geometry.too_many_vertices"
    GEOMETRY_ZERO_AREA = "geometry.zero_area"
    GEOMETRY_SELF_INTERSECTION = "geometry.self_intersection"
    GEOMETRY_INVALID = "geometry.invalid"
    GEOMETRY_OUT_OF_IMAGE = "geometry.out_of_image"
    GEOMETRY_OUT_OF_CRS_RANGE = "geometry.out_of_crs_range"
    GEOMETRY_TOO_SMALL = "geometry.too_small"
    GEOMETRY_TOO_LARGE = "geometry.too_large"
    CLASS_UNKNOWN = "class.unknown"
    IMAGE_MISSING_REFERENCE = "image.missing_reference"
    CRS_INVALID = "crs.invalid"
    REVISION_STALE = "revision.stale"


class ValidationRules(BaseModel):
    """Bounds of what a plausible annotation looks like. Defaults suit building/road/tree
    polygons on 0.1-1 m aerial chips; loosen per deployment in the settings file."""

    max_payload_bytes: int = Field(
        MAX_EVENT_BYTES, gt=0, description="Kafka refuses larger records anyway."
    )
    max_features: int = Field(5_000, gt=0)
    max_vertices: int = Field(
        10_000, gt=3, description="Per feature; more is a tracing tool gone wrong."
    )
    min_area_px: float = Field(4.0, ge=0, description="Smaller is a stray click.")
    max_area_px: float = Field(16_384.0**2, gt=0)
    min_area_m2: float = Field(0.25, ge=0, description="For geographic coordinates.")
    max_area_m2: float = Field(25_000_000.0, gt=0, description="25 km², larger than any chip.")
    edge_tolerance_px: float = Field(
        0.5, ge=0, description="Percent-to-pixel rounding may overshoot the border slightly."
    )


class _FeatureRejected(Exception):
    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- raw bytes → event -------------------------------------------------------------------


def parse_raw(raw: bytes, rules: ValidationRules | None = None) -> AnnotationEvent | list[Reason]:
    """Decode one bare ``AnnotationEvent`` JSON document, or say precisely why not.

    Size is checked before parsing so an oversized record never costs the memory it claims.
    Each pydantic error becomes one violation whose code says what kind of error it is and
    whose message names the field, so a person can fix the producer.
    """
    rules = rules or ValidationRules()
    if len(raw) > rules.max_payload_bytes:
        return [
            Reason(
                code=Code.PAYLOAD_TOO_LARGE,
                message=f"{len(raw)} bytes exceeds the limit of {rules.max_payload_bytes}",
            )
        ]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [Reason(code=Code.PAYLOAD_ENCODING, message=f"not UTF-8: {exc}")]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [Reason(code=Code.SCHEMA_MALFORMED_JSON, message=f"malformed JSON: {exc}")]
    except RecursionError:
        # Python's parser recurses: a few thousand nested brackets exhaust its stack.
        return [Reason(code=Code.SCHEMA_TOO_DEEP, message="JSON nested too deep to parse")]
    if not isinstance(data, dict):
        kind = type(data).__name__
        return [Reason(code=Code.SCHEMA_NOT_OBJECT, message=f"expected an object, got {kind}")]
    try:
        return AnnotationEvent.model_validate(data)
    except ValidationError as exc:
        return _schema_violations(exc)


def _schema_violations(exc: ValidationError) -> list[Reason]:
    out: list[Reason] = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "<root>"
        code = _schema_code(err["type"], err["loc"])
        out.append(Reason(code=code, message=f"{field}: {err['msg']} ({err['type']})"))
    return out


def _schema_code(error_type: str, loc: tuple[int | str, ...]) -> Code:
    if loc[:1] == ("schema_version",) and error_type == "literal_error":
        return Code.SCHEMA_UNSUPPORTED_VERSION
    if error_type == "missing":
        return Code.SCHEMA_MISSING_FIELD
    if error_type in ("enum", "literal_error"):
        return Code.SCHEMA_UNKNOWN_VALUE
    if error_type.endswith(("_type", "_parsing")) or error_type.endswith("_from_float"):
        return Code.SCHEMA_WRONG_TYPE
    if error_type.startswith(("greater_than", "less_than", "too_", "string_too_")):
        return Code.SCHEMA_OUT_OF_RANGE
    if error_type in ("value_error", "assertion_error"):
        return Code.SCHEMA_INVALID_VALUE
    return Code.SCHEMA_INVALID


# --- event rules -------------------------------------------------------------------------


def validate_event(
    event: AnnotationEvent,
    taxonomy: Taxonomy,
    rules: ValidationRules | None = None,
    last_revision: int | None = None,
) -> list[Reason]:
    """All annotation-level rules for one event; empty means valid.

    ``last_revision`` is the newest revision already accepted for this task. Only a strictly
    older revision is stale: the same revision again is a redelivery, and redoing it must be
    harmless (the catalog upsert is idempotent), so it is not quarantined.
    """
    rules = rules or ValidationRules()
    out: list[Reason] = []
    if last_revision is not None and event.revision < last_revision:
        out.append(
            Reason(
                code=Code.REVISION_STALE,
                message=f"revision {event.revision} is older than {last_revision} already seen",
            )
        )
    size = len(event.model_dump_json().encode())
    if size > rules.max_payload_bytes:
        out.append(
            Reason(
                code=Code.PAYLOAD_TOO_LARGE,
                message=f"{size} bytes exceeds the limit of {rules.max_payload_bytes}",
            )
        )
    if event.removes_sample:
        # A rejection or deletion only needs to name its task; its shapes are never used.
        return out
    if event.image is None:
        out.append(
            Reason(
                code=Code.IMAGE_MISSING_REFERENCE,
                message="a submitted/approved revision needs an image reference",
            )
        )
    if len(event.features) > rules.max_features:
        out.append(
            Reason(
                code=Code.FEATURES_TOO_MANY,
                message=f"{len(event.features)} features exceed the limit of {rules.max_features}",
            )
        )
        return out
    geographic = False
    if event.coordinates == CoordSpace.GEO:
        crs_name = event.crs or (event.image.bounds_crs if event.image else None)
        if crs_name is not None:
            crs = _parse_crs(crs_name)
            if crs is None:
                out.append(Reason(code=Code.CRS_INVALID, message=f"unknown CRS {crs_name!r}"))
                return out
            geographic = crs.is_geographic
    for index, feature in enumerate(event.features):
        try:
            _check_feature(feature, event, taxonomy, rules, geographic)
        except _FeatureRejected as rejected:
            out.append(Reason(code=rejected.code, message=rejected.message, feature=index))
    return out


def validate_raw(
    raw: bytes,
    taxonomy: Taxonomy,
    rules: ValidationRules | None = None,
    last_revision: int | None = None,
) -> tuple[AnnotationEvent | None, list[Reason]]:
    """``parse_raw`` then ``validate_event``: the whole validate stage's decision, as data."""
    parsed = parse_raw(raw, rules)
    if isinstance(parsed, list):
        return None, parsed
    return parsed, validate_event(parsed, taxonomy, rules, last_revision)


@lru_cache(maxsize=256)
def _parse_crs(name: str) -> CRS | None:
    try:
        return CRS.from_user_input(name)
    except CRSError:
        return None


def _check_feature(
    feature: Feature,
    event: AnnotationEvent,
    taxonomy: Taxonomy,
    rules: ValidationRules,
    geographic: bool,
) -> None:
    if feature.label not in taxonomy.classes:
        known = ", ".join(sorted(taxonomy.classes))
        raise _FeatureRejected(Code.CLASS_UNKNOWN, f"class {feature.label!r} is not one of {known}")
    geom = _checked_shape(feature.geometry, rules)
    if geom.convex_hull.area == 0:
        raise _FeatureRejected(Code.GEOMETRY_ZERO_AREA, "all vertices are collinear")
    if not geom.is_valid:
        reason = explain_validity(geom)
        code = (
            Code.GEOMETRY_SELF_INTERSECTION
            if reason.startswith(("Self-intersection", "Ring Self-intersection"))
            else Code.GEOMETRY_INVALID
        )
        raise _FeatureRejected(code, reason)
    _check_extent(geom, event, rules, geographic)
    _check_area(geom, rules, geographic, event.coordinates)


def _checked_shape(geometry: dict[str, Any], rules: ValidationRules) -> BaseGeometry:
    """Structural checks shapely would either crash on or silently repair."""
    kind = geometry.get("type")
    if kind not in POLYGONAL:
        raise _FeatureRejected(
            Code.GEOMETRY_UNSUPPORTED_TYPE, f"{kind!r} is not a Polygon or MultiPolygon"
        )
    coords = geometry.get("coordinates")
    if not isinstance(coords, list):
        raise _FeatureRejected(Code.GEOMETRY_MALFORMED, "coordinates must be a list")
    polygons = coords if kind == "MultiPolygon" else [coords]
    rings = [ring for polygon in polygons if isinstance(polygon, list) for ring in polygon]
    if not rings or any(not ring for ring in rings):
        raise _FeatureRejected(Code.GEOMETRY_EMPTY, "the geometry has no vertices")
    vertices = 0
    for ring in rings:
        _check_ring(ring)
        vertices += len(ring) - 1
    if vertices > rules.max_vertices:
        raise _FeatureRejected(
            Code.GEOMETRY_TOO_MANY_VERTICES,
            f"{vertices} vertices exceed the limit of {rules.max_vertices}",
        )
    return shape(geometry)


def _check_ring(ring: Any) -> None:
    if not isinstance(ring, list) or not all(
        isinstance(p, list | tuple)
        and len(p) in (2, 3)
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in p)
        for p in ring
    ):
        raise _FeatureRejected(
            Code.GEOMETRY_MALFORMED, "a ring must be a list of [x, y] number pairs"
        )
    if not all(math.isfinite(c) for p in ring for c in p):
        raise _FeatureRejected(Code.GEOMETRY_NON_FINITE, "a coordinate is NaN or infinite")
    if list(ring[0]) != list(ring[-1]):
        raise _FeatureRejected(
            Code.GEOMETRY_UNCLOSED_RING, "a ring's last position must repeat its first"
        )
    distinct = {tuple(p[:2]) for p in ring}
    if len(ring) < 4 or len(distinct) < 3:
        raise _FeatureRejected(
            Code.GEOMETRY_TOO_FEW_POINTS,
            f"a ring needs at least 3 distinct vertices, has {len(distinct)}",
        )


def _check_extent(
    geom: BaseGeometry, event: AnnotationEvent, rules: ValidationRules, geographic: bool
) -> None:
    minx, miny, maxx, maxy = geom.bounds
    image = event.image
    if event.coordinates == CoordSpace.PIXEL:
        if image is None or image.width is None or image.height is None:
            return
        tol = rules.edge_tolerance_px
        box = (-tol, -tol, image.width + tol, image.height + tol)
        where = f"the {image.width}x{image.height} px image"
    elif image is not None and image.bounds is not None and _same_crs(event.crs, image.bounds_crs):
        box, where = image.bounds, f"the image bounds {image.bounds}"
    elif geographic:
        box, where = (-180.0, -90.0, 180.0, 90.0), "longitude/latitude range"
        if not _inside((minx, miny, maxx, maxy), box):
            raise _FeatureRejected(
                Code.GEOMETRY_OUT_OF_CRS_RANGE, f"extent {geom.bounds} is outside the {where}"
            )
        return
    else:
        return
    if not _inside((minx, miny, maxx, maxy), box):
        raise _FeatureRejected(
            Code.GEOMETRY_OUT_OF_IMAGE, f"extent {geom.bounds} reaches outside {where}"
        )


def _same_crs(a: str | None, b: str | None) -> bool:
    """Whether labels in CRS ``a`` can be compared with image bounds in CRS ``b``.

    Unset bounds CRS means "the image's own", which validation cannot know (it never opens
    the image): labels in EPSG:4326 over a UTM scene with UTM bounds are not comparable, and
    comparing them refused every such task as out of the image. Unset label CRS means the
    bounds' CRS.
    """
    if b is None:
        return False
    if a is None:
        return True
    ca, cb = _parse_crs(a), _parse_crs(b)
    return ca is not None and ca == cb


def _inside(bounds: tuple[float, ...], box: tuple[float, ...]) -> bool:
    return (
        bounds[0] >= box[0] and bounds[1] >= box[1] and bounds[2] <= box[2] and bounds[3] <= box[3]
    )


def _check_area(
    geom: BaseGeometry, rules: ValidationRules, geographic: bool, space: CoordSpace
) -> None:
    if space == CoordSpace.PIXEL:
        area, unit, low, high = geom.area, "px²", rules.min_area_px, rules.max_area_px
    else:
        area, unit, low, high = (
            _area_m2(geom, geographic),
            "m²",
            rules.min_area_m2,
            rules.max_area_m2,
        )
    if area < low:
        raise _FeatureRejected(Code.GEOMETRY_TOO_SMALL, f"area {area:.3g} {unit} is below {low:g}")
    if area > high:
        raise _FeatureRejected(Code.GEOMETRY_TOO_LARGE, f"area {area:.3g} {unit} exceeds {high:g}")


def _area_m2(geom: BaseGeometry, geographic: bool) -> float:
    """Projected CRSs are taken to be in metres; degrees are scaled at the feature's latitude
    (an equirectangular approximation, well within the factor-of-ten these bounds need)."""
    if not geographic:
        return geom.area
    lat = geom.centroid.y
    return geom.area * _M_PER_DEG_LAT * _M_PER_DEG_LON_EQUATOR * math.cos(math.radians(lat))
