"""``tritonlens embed --out x.parquet`` on the real server: one row per item (kind, item,
embedding), the same vectors as ``--out x.npy`` and as ClipClient, in the same order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tritonlens.client.clip import ClipClient

TRITONLENS = str(Path(sys.executable).parent / "tritonlens")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is the parquet extra (make setup installs it)")


def test_parquet_holds_file_names_texts_and_vectors(server, photos, tmp_path):
    texts = tmp_path / "texts.txt"
    lines = [f"a photo of thing number {i}" for i in range(12)]
    texts.write_text("\n".join(lines) + "\n")
    folder = photos[0].parent
    common = ["embed", "--image-dir", str(folder), "--text-file", str(texts), "--url", server.grpc_url]
    for out in ("emb.parquet", "emb.npy"):
        result = subprocess.run([TRITONLENS, *common, "--out", str(tmp_path / out)],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "emb.parquet")
    assert table.column_names == ["kind", "item", "embedding"]
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    assert table.column("kind").to_pylist() == ["image"] * len(images) + ["text"] * len(lines)
    assert table.column("item").to_pylist() == [str(p) for p in images] + lines
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert np.array_equal(vectors, np.load(tmp_path / "emb.npy"))
    client = ClipClient(server.grpc_url, "grpc")
    expected = np.concatenate([client.embed_images(images), client.embed_texts(lines)])
    assert np.allclose(vectors, expected, atol=1e-5)
