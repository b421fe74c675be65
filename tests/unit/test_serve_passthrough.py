"""Further tritonserver flags for ``tritonlens serve`` / ``TritonServer(extra_args=)``: passed
through as ``--flag=value``, and the flags the launcher sets itself refused by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tritonlens.launcher import TritonServer
from tritonlens.launcher.flags import check_extra_args

TRITONLENS = str(Path(sys.executable).parent / "tritonlens")


def test_flags_are_joined_and_kept_in_order():
    assert check_extra_args(["--metrics-config", "summary_latencies=true",
                             "--response-cache-byte-size", "1000000", "--log-info=false"]) == [
        "--metrics-config=summary_latencies=true", "--response-cache-byte-size=1000000",
        "--log-info=false"]


def test_exit_timeout_flag_replaces_the_launchers(tmp_path):
    server = TritonServer(tmp_path, extra_args=["--exit-timeout-secs", "40"])
    assert server.exit_timeout == 40
    assert check_extra_args(["--exit-timeout-secs", "40"]) == server.extra_args


@pytest.mark.parametrize("flags, named", [
    (["--http-port", "9000"], "--http-port is set by tritonlens itself: use its --http-port option"),
    (["--grpc-address=0.0.0.0"], "use its --host option"),
    (["--model-repository=/tmp"], "use its --repo option"),
    (["--strict-readiness=false"], "cannot be passed through"),
    (["--backend-config=python,shm-region-prefix-name=x"], "shm-region-prefix-name"),
    (["9000"], "tritonserver flag expected"),
])
def test_flags_tritonlens_sets_are_refused_by_name(tmp_path, flags, named):
    with pytest.raises(ValueError, match=named.replace("-", r"\-").replace(".", r"\.")):
        TritonServer(tmp_path, extra_args=flags)
    result = subprocess.run([TRITONLENS, "serve", "--repo", str(tmp_path), "--", *flags],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and named in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr and "starting tritonserver" not in result.stdout
