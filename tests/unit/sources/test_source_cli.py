"""``labelflow source add labelstudio``: checks the connection, derives the taxonomy from the
label config with stable indices, writes the settings file, never prints the token."""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelflow.cli import app
from labelflow.config import Settings
from labelflow.sources.labelstudio_config import parse_label_config
from labelstudio_support import LABEL_CONFIG, TOKEN, FakeLabelStudio, fake_labelstudio


@pytest.fixture
def server() -> Iterator[type[FakeLabelStudio]]:
    with fake_labelstudio() as handler:
        yield handler


def _add(tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"LABELFLOW_CONFIG_FILE": str(tmp_path / "labelflow.toml"), "COLUMNS": "200"}
    result = CliRunner().invoke(
        app,
        ["--data-dir", str(tmp_path / "data"), "source", "add", "labelstudio", *args],
        env=env,
    )
    return result.exit_code, result.output + (str(result.exception) if result.exception else "")


def test_connects_a_project_and_writes_the_settings(
    server: type[FakeLabelStudio], tmp_path: Path
) -> None:
    args = ["--url", server.base_url, "--project", "7", "--token", TOKEN]
    code, out = _add(tmp_path, *args, "--webhook-secret", "s3cret")
    assert code == 0, out
    assert TOKEN not in out
    assert "building" in out and "pole" not in out and "KeyPointLabels" in out
    path = tmp_path / "labelflow.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = tomllib.loads(path.read_text())
    assert written["labelstudio_project"] == 7
    assert written["labelstudio_token"] == TOKEN
    assert written["labelstudio_webhook_secret"] == "s3cret"
    assert written["taxonomy"]["classes"] == {"building": 1, "road": 2, "tree": 3, "water": 4}
    os.environ["LABELFLOW_CONFIG_FILE"] = str(path)
    try:
        settings = Settings()
    finally:
        del os.environ["LABELFLOW_CONFIG_FILE"]
    assert settings.labelstudio_project == 7
    assert settings.taxonomy.classes["water"] == 4


def test_a_changed_label_config_appends_and_keeps_indices(
    server: type[FakeLabelStudio], tmp_path: Path
) -> None:
    args = ["--url", server.base_url, "--project", "7", "--token", TOKEN]
    assert _add(tmp_path, *args)[0] == 0
    server.projects[7]["label_config"] = LABEL_CONFIG.replace(
        '<Label value="road"/>', '<Label value="car"/>'
    )
    code, out = _add(tmp_path, *args)
    assert code == 0, out
    classes = tomllib.loads((tmp_path / "labelflow.toml").read_text())["taxonomy"]["classes"]
    assert classes == {"building": 1, "road": 2, "tree": 3, "water": 4, "car": 5}
    assert "road" in out and "no longer in the label config" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--project", "7", "--token", "wrong"], "refused the token"),
        (["--project", "8", "--token", TOKEN], "has no project 8"),
    ],
)
def test_refusals_are_clear_and_write_nothing(
    server: type[FakeLabelStudio], tmp_path: Path, args: list[str], message: str
) -> None:
    code, out = _add(tmp_path, "--url", server.base_url, *args)
    assert code != 0
    assert message in out
    assert not (tmp_path / "labelflow.toml").exists()


def test_label_config_classes_are_the_mask_tags_labels_in_order() -> None:
    config = parse_label_config(LABEL_CONFIG)
    assert config.classes == ["building", "road", "tree", "water"]
    assert config.other_tags == ["KeyPointLabels"]
