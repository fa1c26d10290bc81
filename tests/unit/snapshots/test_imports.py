"""The framework-neutral reader never pulls PyTorch in, installed or not."""

from __future__ import annotations

import subprocess
import sys


def test_the_reader_does_not_import_torch() -> None:
    code = "import sys, labelflow.dataset, labelflow.snapshots.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
