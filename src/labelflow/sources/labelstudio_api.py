"""Label Studio's REST API: the reliable path to a project's tasks.

Everything labelflow reads from Label Studio goes through :class:`LabelStudioClient`, with the
project's API token (``Authorization: Token …``; Label Studio's legacy tokens, which a server
enables with ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true``).

Listing uses the data manager's query on ``GET /api/tasks/`` (``fields=all`` returns each
task with its annotations): filters on ``tasks:id`` and ``tasks:updated_at`` with operators
such as ``greater`` and ``greater_or_equal``, and an ordering. Checked on a 1.23.2 server:
times filter to the microsecond, and saving, skipping or deleting an annotation bumps its
task's ``updated_at``.

Errors are classified for the stage runner: timeouts, refused connections, 429 and 5xx are
transient (``labelstudio.timeout``, ``labelstudio.unavailable``); a refused token is
``labelstudio.unauthorized`` and other 4xx ``labelstudio.http_error``, both permanent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any

import httpx

from labelflow.errors import PermanentError, TransientError

Filter = dict[str, Any]
"""One data-manager filter item, e.g. :func:`id_after` or :func:`updated_since`."""


def id_after(task_id: int) -> Filter:
    return {"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": task_id}


def updated_since(when: str, *, inclusive: bool = True) -> Filter:
    """Tasks updated at or after ``when`` (Label Studio's ISO-8601 text, microseconds kept)."""
    operator = "greater_or_equal" if inclusive else "greater"
    return {
        "filter": "filter:tasks:updated_at",
        "operator": operator,
        "type": "Datetime",
        "value": when,
    }


def updated_until(when: str) -> Filter:
    return {
        "filter": "filter:tasks:updated_at",
        "operator": "less_or_equal",
        "type": "Datetime",
        "value": when,
    }


class LabelStudioClient:
    """A thin, classified client of the endpoints labelflow uses."""

    def __init__(
        self, base_url: str, token: str, *, timeout_s: float = 10.0, page_size: int = 100
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.page_size = page_size
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Token {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout_s),
        )

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def whoami(self) -> dict[str, Any]:
        """The token's user: checks the connection and the token in one request."""
        return self._json(self._get("/api/current-user/whoami"))

    def get_project(self, project: int) -> dict[str, Any] | None:
        """``GET /api/projects/{id}`` (title, ``label_config`` XML …); None if there is none."""
        response = self._get(f"/api/projects/{project}")
        return None if response.status_code == 404 else self._json(response)

    def get_task(self, task_id: int) -> dict[str, Any] | None:
        """``GET /api/tasks/{id}`` with its annotations; None when the task does not exist."""
        response = self._get(f"/api/tasks/{task_id}")
        return None if response.status_code == 404 else self._json(response)

    def iter_tasks(self, project: int) -> Iterator[dict[str, Any]]:
        """Every task of a project, page by page (a page past the end answers 404)."""
        page = 1
        while True:
            tasks = self.tasks_page(project, page=page)
            yield from tasks
            if len(tasks) < self.page_size:
                return
            page += 1

    def tasks_page(
        self,
        project: int,
        *,
        filters: Sequence[Filter] = (),
        ordering: Sequence[str] = ("tasks:id",),
        page: int = 1,
    ) -> list[dict[str, Any]]:
        """One page of a project's tasks matching every filter, in ``ordering``; empty past
        the last page."""
        query = {
            "filters": {"conjunction": "and", "items": list(filters)},
            "ordering": list(ordering),
        }
        response = self._get(
            "/api/tasks/",
            params={
                "project": project,
                "fields": "all",
                "page": page,
                "page_size": self.page_size,
                "query": json.dumps(query),
            },
        )
        if response.status_code == 404:
            return []
        body = self._json(response)
        tasks = body.get("tasks", []) if isinstance(body, dict) else body
        if not isinstance(tasks, list):
            raise PermanentError("labelstudio.http_error", "GET /api/tasks/: no task list")
        return tasks

    def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        try:
            response = self._http.get(path, params=params)
        except httpx.TimeoutException as exc:
            raise TransientError("labelstudio.timeout", f"GET {path}: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise TransientError("labelstudio.unavailable", f"GET {path}: {exc!r}") from exc
        status = response.status_code
        if status in (401, 403):
            raise PermanentError(
                "labelstudio.unauthorized",
                f"Label Studio refused the token (HTTP {status}) for GET {path}: check the "
                "API token (legacy tokens need LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true)",
            )
        if status == 429 or status >= 500:
            raise TransientError("labelstudio.unavailable", f"GET {path}: HTTP {status}")
        if status >= 400 and status != 404:
            raise PermanentError("labelstudio.http_error", f"GET {path}: HTTP {status}")
        return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise TransientError(
                "labelstudio.unavailable",
                f"GET {response.url.path}: not JSON (a proxy's error page?): {exc}",
            ) from exc
