"""A real Label Studio for the tests of this folder, started once per session (about a minute
on two cores) and stopped after; see :mod:`labelstudio_server`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from labelstudio_server import LabelStudioServer, start_labelstudio


@pytest.fixture(scope="session")
def labelstudio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    with start_labelstudio(tmp_path_factory.mktemp("label-studio")) as server:
        yield server
