"""``labelflow source …``: connect a labelling tool's project, and follow it.

``labelflow source add labelstudio --url … --project … --token …`` checks the connection and
the token, reads the project's label config, gives its classes stable mask indices (new
labels are appended, removed ones kept and reported), and writes the connection and the
taxonomy into ``labelflow.toml``, where ``labelflow up`` finds them: from then on it backfills
the project once and follows it. The token is written to that file (mode 0600) and never
printed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from labelflow.catalog.store import Catalog
from labelflow.config import Settings, config_file
from labelflow.config_file import update_config_file
from labelflow.errors import ClassifiedError, LabelflowError
from labelflow.shutdown import stop_on_signals
from labelflow.sources.labelstudio_api import LabelStudioClient
from labelflow.sources.labelstudio_config import parse_label_config
from labelflow.sources.state import SourceState

log = logging.getLogger(__name__)

console = Console()

source_app = typer.Typer(
    help="Where annotations come from: connect a labelling tool's project.",
    no_args_is_help=True,
)
add_app = typer.Typer(help="Connect a source.", no_args_is_help=True)
source_app.add_typer(add_app, name="add")


@add_app.command("labelstudio")
def add_labelstudio(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(help="Label Studio's base URL, e.g. http://host:8081.")],
    project: Annotated[int, typer.Option(help="The project's id (in its URL: /projects/ID).")],
    token: Annotated[
        str,
        typer.Option(
            envvar="LABELFLOW_LABELSTUDIO_TOKEN",
            help="API token (Account & Settings → Access Token; env LABELFLOW_LABELSTUDIO_TOKEN).",
            show_default=False,
        ),
    ],
    webhook_secret: Annotated[
        str | None,
        typer.Option(help="Shared secret Label Studio's webhooks will send (optional)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="The settings file to write (default: the one labelflow reads)."),
    ] = None,
) -> None:
    """Connect a Label Studio project: check it, derive the taxonomy, save the settings."""
    settings: Settings = ctx.obj
    url = url.rstrip("/")
    with LabelStudioClient(url, token) as client:
        try:
            user = client.whoami()
            found = client.get_project(project)
        except ClassifiedError as exc:
            raise _connection_error(url, exc) from None
    if found is None:
        raise LabelflowError(
            f"Label Studio at {url} has no project {project} that this token can see",
            hint="the id is the number in the project's URL (/projects/ID)",
        )
    labels = parse_label_config(str(found.get("label_config") or ""))
    if not labels.classes:
        raise LabelflowError(
            f"project {project} has no PolygonLabels, RectangleLabels or BrushLabels labels",
            hint="labelflow makes segmentation masks from those regions",
        )
    origin = f"labelstudio:{project}"
    with Catalog(settings.resolved_catalog_url) as catalog:
        catalog.migrate()
        assignment = SourceState(catalog).assign_classes(labels.classes, origin)
    updates: dict[str, object] = {
        "labelstudio_url": url,
        "labelstudio_token": token,
        "labelstudio_project": project,
        "taxonomy": {"classes": assignment.classes},
    }
    if webhook_secret:
        updates["labelstudio_webhook_secret"] = webhook_secret
    path = config or config_file()
    update_config_file(path, updates)

    who = user.get("email") or user.get("username") or user.get("id")
    console.print(f"Connected to Label Studio at {url} as {who}.")
    console.print(f"Project {project}: {found.get('title') or '(untitled)'}")
    console.print("Classes (mask index):")
    for name, index in assignment.classes.items():
        note = (
            " [green]new[/]"
            if name in assignment.added
            else " [yellow]no longer in the label config; index kept[/]"
            if name in assignment.removed
            else ""
        )
        console.print(f"  {index:>3}  {name}{note}", highlight=False)
    if labels.other_tags:
        console.print(
            f"[yellow]Regions of {', '.join(labels.other_tags)} cannot become mask pixels: "
            "they will be quarantined.[/]"
        )
    console.print(f"Settings written to {path} (the token is stored there, not shown).")
    console.print(
        "Next: labelflow up backfills every task of the project, then follows it. For "
        "changes within a second, add a webhook in the project's settings to "
        "http://<labelflow host>:8080/webhooks/labelstudio"
        + (" with the header X-Labelflow-Secret: <your secret>." if webhook_secret else ".")
    )


@source_app.command("follow")
def follow(ctx: typer.Context) -> None:
    """Backfill, then poll the configured Label Studio project until Ctrl-C/SIGTERM (what
    ``labelflow up`` runs in the background; use it to follow from a separate process)."""
    from labelflow.sources.labelstudio_sync import open_follower

    settings: Settings = ctx.obj
    stop = threading.Event()
    with stop_on_signals(stop.set), open_follower(settings) as follower:
        console.print(f"Following Label Studio project {follower.project}. Ctrl-C stops.")
        follower.run(stop)


def _connection_error(url: str, exc: ClassifiedError) -> LabelflowError:
    if exc.code == "labelstudio.unauthorized":
        return LabelflowError(
            f"Label Studio at {url} refused the token",
            hint="copy it from Account & Settings → Access Token; a server started with "
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true accepts legacy tokens",
        )
    if exc.transient:
        return LabelflowError(
            f"cannot reach Label Studio at {url}: {exc.message}",
            hint="check the URL and that Label Studio is running",
        )
    return LabelflowError(f"Label Studio at {url} answered unexpectedly: {exc.message}")
