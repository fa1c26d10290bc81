"""The HTTP endpoint Label Studio's webhooks call.

Label Studio does not sign webhooks; it can only send a custom header. So the endpoint
requires a shared secret in that header, compared in constant time (an ordinary ``==`` leaks
through its timing how many leading characters were right). The secret is checked before the
body is read, so an unauthenticated caller learns nothing about what a valid body looks like.

Label Studio waits about a second and never retries, so the handler does no work beyond
parsing: it hands a :class:`TaskChanged` hint to ``publish`` and answers. ``publish`` may block
(the API's waits for the broker's acknowledgement), so it runs in the thread pool, never on the
event loop. A lost hint is repaired by a sweep of the project, never by this endpoint.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from labelflow.sources.base import SourceFormatError
from labelflow.sources.labelstudio import SOURCE, TaskChanged, parse_webhook

DEFAULT_SECRET_HEADER = "X-Labelflow-Secret"
MAX_BODY_BYTES = 4 * 1024 * 1024
"""A webhook body with its task data is a few KB; anything this big is not Label Studio."""

Publish = Callable[[TaskChanged], None]


def webhook_router(
    secret: str,
    publish: Publish,
    *,
    header_name: str = DEFAULT_SECRET_HEADER,
    source: str = SOURCE,
) -> APIRouter:
    """``POST /webhooks/labelstudio``: 401 without the right secret, 422 for a body that is
    not a Label Studio webhook, 202 with the hint published, 200 for an action that changes
    no label."""
    if not secret:
        raise ValueError("a webhook endpoint without a secret would accept anyone's hints")
    expected = secret.encode()
    router = APIRouter()

    @router.post("/webhooks/labelstudio", status_code=status.HTTP_202_ACCEPTED)
    async def receive(request: Request, response: Response) -> dict[str, object]:
        given = request.headers.get(header_name, "").encode()
        if not hmac.compare_digest(given, expected):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong webhook secret")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "webhook body too large")
        try:
            hint = parse_webhook(json.loads(body), source=source)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"malformed JSON: {exc}"
            ) from exc
        except SourceFormatError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
        if hint is None:
            response.status_code = status.HTTP_200_OK
            return {"accepted": False, "reason": "action changes no label"}
        await run_in_threadpool(publish, hint)
        return {"accepted": True, "project": hint.project, "task_ids": list(hint.task_ids)}

    return router
