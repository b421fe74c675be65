"""Quiet by default: the known, harmless warnings of torch's tracer and ONNX exporter (and the
log lines of onnxruntime's quantizer) are hidden during an export, with one line saying so;
any other warning still shows; ``--verbose`` (DEBUG on the ``tritonlens.export`` logger)
hides nothing. And ``--help`` texts are reflowed: a docstring's hard line breaks no longer
break sentences in the terminal.

The warnings come from real torch tracing and ONNX export of a small module through
``save_graph``, as every family's export runs it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings

import pytest
import torch

from tritonlens.client.help_text import reflow
from tritonlens.export import quiet
from tritonlens.export.core import save_graph


class ShapeCheck(torch.nn.Module):
    """A shape check in Python (as sam2's window padding has): a TracerWarning when traced."""

    def forward(self, x):
        if x.sum() > -1e9:  # "Converting a tensor to a Python boolean ..."
            x = x * 2
        return x[:, torch.tensor([0, 1])]  # aten::index with a tensor: the ONNX exporter warns


def export(tmp_path, fmt: str) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_graph(ShapeCheck(), (torch.ones(2, 3),), ("x",), ("y",), {"x": {0: "b"}}, fmt, 17,
                   tmp_path)
    return caught


def known(caught) -> list[str]:
    return [f"{w.category.__name__}: {w.message}" for w in caught
            if any(issubclass(w.category, c) and re.match(p, str(w.message))
                   for c, p in quiet.KNOWN)]


@pytest.fixture
def debug_logging():
    logger = logging.getLogger("tritonlens.export")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield
    logger.setLevel(level)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_verbose_shows_the_exporter_warnings(tmp_path, fmt, debug_logging):
    """What --verbose shows is what torch really says: the test module triggers known ones."""
    assert known(export(tmp_path, fmt)), "torch no longer warns here: revisit quiet.KNOWN"


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_known_exporter_warnings_are_hidden_with_one_line(tmp_path, fmt, monkeypatch, caplog):
    monkeypatch.setattr(quiet, "_told", False)
    with caplog.at_level(logging.WARNING, logger="tritonlens.export"):
        caught = export(tmp_path, fmt)
        export(tmp_path, fmt)
    assert known(caught) == []
    notices = [r.getMessage() for r in caplog.records if r.name == quiet.__name__]
    assert len(notices) == 1 and "--verbose" in notices[0], notices


def test_other_warnings_and_logs_still_show(caplog):
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        with quiet.exporter_warnings():
            warnings.warn("something new from torch", UserWarning)
            warnings.warn("Converting a tensor to a Python boolean might ...",
                          torch.jit.TracerWarning)
            logging.getLogger().warning("Please consider to run pre-processing before "
                                        "quantization. Refer to example: ...")
            logging.getLogger().warning("an unrelated root log line")
    assert [str(w.message) for w in caught] == ["something new from torch"]
    messages = [r.getMessage() for r in caplog.records]
    assert "an unrelated root log line" in messages
    assert not any(m.startswith(quiet.KNOWN_LOGS) for m in messages)
    # outside the block nothing is filtered any more
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always")
        warnings.warn("Converting a tensor to a Python boolean", torch.jit.TracerWarning)
    assert len(after) == 1


def test_reflow_joins_lines_within_paragraphs_only():
    doc = """First line
    goes on.

    Second paragraph
    goes on too.
    """
    assert reflow(doc) == "First line goes on.\n\nSecond paragraph goes on too."


def test_cli_help_is_reflowed_and_export_has_verbose():
    """At any width a sentence of a command's docstring stays on one line where it fits."""
    env = dict(os.environ, COLUMNS="200", TERM="dumb")
    out = subprocess.run([sys.executable, "-m", "tritonlens.client.cli", "export", "clip", "--help"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(label embeddings computed once, stored as graph constants" in out.stdout, out.stdout
    assert "--verbose" in out.stdout
    listing = subprocess.run([sys.executable, "-m", "tritonlens.client.cli", "--help"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert "frames are streamed one request at a time on a Triton sequence" in listing.stdout, \
        listing.stdout
