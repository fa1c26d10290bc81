"""A small Label Studio look-alike served over real HTTP, for tests of the source and stage."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

TOKEN = "secret-token"
EXPORT: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "labelstudio" / "export.json").read_text()
)
FAILING, HANGING, GONE_BAD = 500, 501, 400
LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <PolygonLabels name="poly" toName="image">
    <Label value="building"/><Label value="road"/>
  </PolygonLabels>
  <RectangleLabels name="rect" toName="image"><Label value="building"/></RectangleLabels>
  <BrushLabels name="brush" toName="image"><Label value="tree"/><Label value="water"/></BrushLabels>
  <KeyPointLabels name="kp" toName="image"><Label value="pole"/></KeyPointLabels>
</View>"""


class FakeLabelStudio(BaseHTTPRequestHandler):
    """Answers like Label Studio 1.x: ``/api/tasks/{id}`` and the paginated task list, with
    404 past the last page and for deleted tasks. ``outages[id]`` is how many more requests
    for that task answer 503 before it is served again."""

    base_url: str
    tasks: dict[int, dict[str, Any]]
    projects: dict[int, dict[str, Any]]
    outages: dict[int, int]
    release: threading.Event
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if self.headers.get("Authorization") != f"Token {TOKEN}":
            return self._reply(401, {"detail": "Authentication credentials were not provided."})
        url = urlparse(self.path)
        if url.path == "/api/tasks/":
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            page, size = int(query["page"]), int(query["page_size"])
            tasks = [t for t in self.tasks.values() if t["project"] == int(query["project"])]
            tasks = _data_manager_query(tasks, json.loads(query.get("query") or "{}"))
            chunk = tasks[(page - 1) * size : page * size]
            if page > 1 and not chunk:
                return self._reply(404, {"detail": "Invalid page."})
            return self._reply(200, {"tasks": chunk, "total": len(tasks)})
        if url.path == "/api/current-user/whoami":
            return self._reply(200, {"id": 1, "email": "annotator@example.test"})
        if url.path.startswith("/api/projects/"):
            project = self.projects.get(int(url.path.rstrip("/").rsplit("/", 1)[1]))
            return self._reply(200, project) if project else self._reply(404, {"detail": "x"})
        task_id = int(url.path.rstrip("/").rsplit("/", 1)[1])
        if task_id == FAILING or self.outages.get(task_id, 0) > 0:
            self.outages[task_id] = self.outages.get(task_id, 0) - 1
            return self._reply(503, {"detail": "maintenance"})
        if task_id == GONE_BAD:
            return self._reply(400, {"detail": "bad request"})
        if task_id == HANGING:
            self.release.wait(10)
            return self._reply(200, {})
        if task_id not in self.tasks:
            return self._reply(404, {"detail": "Not found."})
        return self._reply(200, self.tasks[task_id])

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output clean."""


_OPERATORS = {
    "greater": lambda a, b: a > b,
    "greater_or_equal": lambda a, b: a >= b,
    "less_or_equal": lambda a, b: a <= b,
}


def _data_manager_query(tasks: list[dict[str, Any]], query: dict[str, Any]) -> list[dict[str, Any]]:
    """The subset of Label Studio's data-manager query labelflow uses: ``and`` of filters on
    ``tasks:id`` / ``tasks:updated_at`` and an ordering on those fields."""

    def field(task: dict[str, Any], name: str) -> Any:
        value = task[name.rsplit(":", 1)[1]]
        return (
            datetime.fromisoformat(value.replace("Z", "+00:00")) if name.endswith("_at") else value
        )

    for item in (query.get("filters") or {}).get("items", []):
        value = item["value"]
        if item["type"] == "Datetime":
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        test = _OPERATORS[item["operator"]]
        tasks = [t for t in tasks if test(field(t, item["filter"]), value)]
    for name in reversed(query.get("ordering") or []):
        tasks = sorted(tasks, key=lambda t, n=name: field(t, n.lstrip("-")), reverse=name[0] == "-")
    return tasks


@contextmanager
def fake_labelstudio() -> Iterator[type[FakeLabelStudio]]:
    """A running look-alike on 127.0.0.1 serving the tasks of ``export.json`` (project 7)."""
    handler = type(
        "Handler",
        (FakeLabelStudio,),
        {
            "tasks": {t["id"]: deepcopy(t) for t in EXPORT},
            "projects": {7: {"id": 7, "title": "Buildings", "label_config": LABEL_CONFIG}},
            "outages": {},
            "release": threading.Event(),
            "seen": [],
        },
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # listening once constructed
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    handler.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield handler
    finally:
        handler.release.set()
        httpd.shutdown()
        httpd.server_close()


def encode_brush(mask: Any) -> list[int]:
    """A boolean ``(height, width)`` mask as Label Studio's brush RLE (RGBA, alpha 255 where
    painted): an independent encoder of the format, so tests can make brushes."""
    import numpy as np

    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask] = (255, 0, 0, 255)
    values = rgba.ravel().tolist()
    classes = (3, 4, 8, 16)  # bits of each run length class
    bits: list[str] = [f"{len(values):032b}", f"{8 - 1:05b}"]
    bits += [f"{c - 1:04b}" for c in classes]

    def chunk(is_run: bool, length: int) -> None:
        index = next(i for i, c in enumerate(classes) if length - 1 < 2**c)
        bits.append(f"{int(is_run)}{index:02b}{length - 1:0{classes[index]}b}")

    i, literal = 0, []
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i] and j - i < 2**16:
            j += 1
        if j - i >= 3:
            if literal:
                chunk(False, len(literal))
                bits.extend(f"{v:08b}" for v in literal)
                literal = []
            chunk(True, j - i)
            bits.append(f"{values[i]:08b}")
            i = j
        else:
            literal.append(values[i])
            i += 1
            if len(literal) == 2**16:
                chunk(False, len(literal))
                bits.extend(f"{v:08b}" for v in literal)
                literal = []
    if literal:
        chunk(False, len(literal))
        bits.extend(f"{v:08b}" for v in literal)
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return [int(stream[k : k + 8], 2) for k in range(0, len(stream), 8)]
