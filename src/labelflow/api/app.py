"""The HTTP API: Label Studio's webhooks in, health and metrics, read-only samples out.

The webhook endpoint answers 202 only once its hint is acknowledged by the broker, so an
accepted hint is never lost; when the broker cannot take it, 503 tells the caller (and the
metrics) that this hint did not make it. Everything else is read-only: the catalog is written
by the commit stage alone.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from pydantic import BaseModel

from labelflow import __version__
from labelflow.api.webhooks import Publish, webhook_router
from labelflow.catalog.store import Catalog, CatalogError
from labelflow.config import Settings
from labelflow.model import SampleVersion
from labelflow.sources.labelstudio import TaskChanged
from labelflow.sources.publish import HintNotDelivered, HintPublisher

HINTS = Counter(
    "labelflow_source_hints", "Webhook hints by outcome (accepted, failed)", ["source", "outcome"]
)

MAX_PAGE = 1000
"""Most samples one ``GET /samples`` returns: a page of the catalog, never all of it."""


class SamplePage(BaseModel):
    """One page of live samples, ordered by id; pass ``next_after`` as ``after`` for the next."""

    samples: list[SampleVersion]
    next_after: str | None


def create_app(settings: Settings, catalog: Catalog, publish: Publish | None = None) -> FastAPI:
    """The API over ``catalog``. The Label Studio webhook is served when
    ``labelstudio_webhook_secret`` is set; its hints go to ``publish`` (by default a
    :class:`HintPublisher` into ``sources.changes``)."""
    app = FastAPI(title="labelflow", version=__version__)
    secret = settings.labelstudio_webhook_secret
    if secret is not None and secret.get_secret_value():
        app.include_router(
            webhook_router(
                secret.get_secret_value(), _counted(publish or HintPublisher(settings).publish)
            )
        )

    @app.exception_handler(HintNotDelivered)
    def hint_not_delivered(_request: Request, exc: HintNotDelivered) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status.HTTP_503_SERVICE_UNAVAILABLE)

    @app.exception_handler(CatalogError)
    def catalog_failed(_request: Request, exc: CatalogError) -> JSONResponse:
        code = status.HTTP_503_SERVICE_UNAVAILABLE if exc.transient else 500
        return JSONResponse({"detail": exc.message, "code": exc.code}, code)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: the process serves requests."""
        return {"status": "ok", "version": __version__}

    @app.get("/metrics")
    def metrics() -> Response:
        """This process's Prometheus metrics; a stage worker serves its own with
        ``labelflow run --metrics-port``."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/samples")
    def list_samples(
        after: Annotated[str | None, Query(description="Start after this sample id.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> SamplePage:
        found = catalog.list(after=after, limit=limit)
        return SamplePage(
            samples=found, next_after=found[-1].sample_id if len(found) == limit else None
        )

    @app.get("/samples/{sample_id}")
    def get_sample(sample_id: str) -> SampleVersion:
        sample = catalog.get(sample_id)
        if sample is None:
            state = catalog.state(sample_id)
            detail = (
                f"sample {sample_id!r} was deleted at revision {state.revision}"
                if state
                else f"no sample {sample_id!r}"
            )
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail)
        return sample

    return app


def _counted(publish: Publish) -> Publish:
    """``publish`` with its outcomes counted: a rising ``failed`` count is hints lost to a
    broker outage, which only a sweep of the project can make up for."""

    def counted(hint: TaskChanged) -> None:
        try:
            publish(hint)
        except Exception:
            HINTS.labels(hint.source, "failed").inc()
            raise
        HINTS.labels(hint.source, "accepted").inc()

    return counted
