"""The `tritonlens` command line, run as a user runs it (a subprocess), on the real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import CLIP_TEST_LABELS
from tritonlens.launcher.process import free_port

TRITONLENS = str(Path(sys.executable).parent / "tritonlens")


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    # rich lays a pipe out at 80 columns and folds long temp paths in table titles, which
    # would split the names the tests look for; a wide terminal's width keeps them whole.
    return subprocess.run([TRITONLENS, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "400"})


def test_help_lists_plugin_commands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "status", "export", "classify", "embed", "demo"):
        assert command in result.stdout
    assert "clip" in run("export", "--help").stdout


def test_classify_json(server, photos, protocol):
    result = run("classify", *map(str, photos[:3]), "--top-k", "3", "--json",
                 "--url", server.url(protocol), "--protocol", protocol)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in photos[:3]]
    for line in lines:
        assert len(line["labels"]) == 3
        assert all(label["label"] in CLIP_TEST_LABELS for label in line["labels"])


def test_classify_reports_bad_files_and_goes_on(server, photos, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    result = run("classify", str(photos[0]), str(bad), str(tmp_path / "missing.png"),
                 "--url", server.grpc_url)
    assert result.returncode == 1
    assert "chelsea_cat.jpg" in result.stdout  # the good photo was classified
    assert "not a JPEG, PNG or WebP" in result.stderr
    assert "cannot read image file" in result.stderr


def test_unreachable_server_is_one_clear_line(photos):
    result = run("classify", str(photos[0]), "--url", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "no Triton server" in result.stderr
    assert "Traceback" not in result.stderr


def test_embed_and_status(server):
    result = run("embed", "--text", "a cat", "--text", "a dog", "--url", server.http_url,
                 "--protocol", "http")
    assert result.returncode == 0, result.stderr
    assert "norm 1.0000" in result.stdout
    status = run("status", "--url", server.http_url)
    assert status.returncode == 0 and "clip_classify" in status.stdout and "READY" in status.stdout


def test_serve_starts_and_stops_cleanly_on_sigterm(repo, tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [TRITONLENS, "serve", "--repo", str(repo), "--http-port", str(port), "--grpc-port", "0",
         "--metrics-port", "0", "--log-file", str(tmp_path / "server.log")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600  # every test model loads; slow on a busy 2-core host
        while run("status", "--url", f"127.0.0.1:{port}", timeout=30).returncode != 0:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "serve did not become ready in 600 s"
            time.sleep(1)
        time.sleep(2)  # let serve print its report before it is stopped
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert "ready" in out and f"127.0.0.1:{port}" in out
    assert "tritonserver stopped (exit code 0)" in out, err


def assert_one_line_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    """Exit 1, no traceback, and one 'error:' line naming the problem and the fix."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for phrase in phrases:
        assert phrase in " ".join(result.stderr.split()), result.stderr


def test_top_k_zero_is_one_line(server, photos):
    assert_one_line_error(run("classify", str(photos[0]), "--top-k", "0", "--url", server.grpc_url),
                          "--top-k must be at least 1")


def test_missing_output_folder_fails_before_any_work(server, photos, tmp_path):
    missing = tmp_path / "nonexistent" / "m.png"
    assert_one_line_error(run("segment", str(photos[0]), "--point", "10,10", "--out", str(missing),
                              "--url", server.grpc_url), "does not exist", "--out")
    assert_one_line_error(run("embed", "--text", "a cat", "--out", str(missing),
                              "--url", server.grpc_url), "does not exist", "--out")


def test_embed_out_writes_the_named_file(server, tmp_path):
    """`--out emb` wrote emb.npy while saying it wrote emb; now it writes what it names."""
    import numpy as np

    out = tmp_path / "emb"
    result = run("embed", "--text", "a cat", "--text", "a dog", "--out", str(out),
                 "--url", server.grpc_url)
    assert result.returncode == 0, result.stderr
    assert f"to {out}" in " ".join(result.stdout.split())
    assert not (tmp_path / "emb.npy").exists()
    assert np.load(out).shape[0] == 2


def test_wrong_port_or_url_form_names_the_fix(server, photos):
    image = str(photos[0])
    # the metrics port over HTTP: was rapidjson.JSONDecodeError
    metrics = f"{server.host}:{server.metrics_port}"
    assert_one_line_error(run("classify", image, "--url", metrics, "-p", "http"),
                          "not as Triton's http endpoint", "metrics port")
    # gRPC to the HTTP port: was "no Triton server"
    assert_one_line_error(run("classify", image, "--url", server.http_url),
                          "speaks HTTP/1.x, not gRPC", "--protocol http")
    # HTTP to the gRPC port
    assert_one_line_error(run("classify", image, "--url", server.grpc_url, "-p", "http"),
                          "is it the gRPC port?", "--protocol grpc")
    assert_one_line_error(run("status", "--url", f"https://{server.http_url}"), "TLS")
    # a scheme is accepted (was a tritonclient traceback plus an AttributeError in __del__)
    result = run("classify", image, "-k", "1", "--json", "--url", f"http://{server.http_url}",
                 "-p", "http")
    assert result.returncode == 0 and "Exception ignored" not in result.stderr, result.stderr


def test_exported_but_not_loaded_says_load_it(repo, photos, tmp_path):
    """A model in the repository but not loaded (explicit model control) was told 'export it'."""
    from tritonlens.launcher import TritonServer

    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                      model_control_mode="explicit", load_models=["clip_tokenize"],
                      log_file=tmp_path / "server.log") as server:
        result = run("classify", str(photos[0]), "--url", server.grpc_url)
        assert_one_line_error(result, "'clip_classify' is in the repository", "not loaded",
                              "--load-model clip_classify")
        assert "export it" not in result.stderr
        assert_one_line_error(run("classify", str(photos[0]), "--prefix", "nope",
                                  "--url", server.grpc_url), "not in the repository", "export it")


def test_classify_a_folder_streams_json_lines(server, photos, tmp_path):
    """A folder is searched recursively for images (sorted; other files skipped)."""
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    copies = [tmp_path / "sub" / "deeper" / f"a{photos[0].suffix}", tmp_path / f"b{photos[1].suffix}",
              tmp_path / "sub" / f"c{photos[2].suffix}"]
    for photo, copy in zip(photos, copies):
        copy.write_bytes(photo.read_bytes())
    (tmp_path / "sub" / "notes.txt").write_text("not an image")
    result = run("classify", str(tmp_path), "-k", "2", "--json", "--url", server.grpc_url)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == sorted(map(str, copies))
    direct = {line["image"]: line["labels"] for line in (json.loads(x) for x in run(
        "classify", *map(str, photos[:3]), "-k", "2", "--json", "--url", server.grpc_url
    ).stdout.splitlines())}
    for photo, copy in zip(photos, copies):
        assert next(x["labels"] for x in lines if x["image"] == str(copy)) == direct[str(photo)]


def test_embed_folder_and_text_file_past_max_batch_size(server, photos, clip_reference, tmp_path):
    """10 images (max_batch_size 8) and 20 texts (16): --out rows and --json lines in order,
    equal to open_clip in-process."""
    import numpy as np
    import torch

    from tests.helpers import cosine, reference_image_embeddings

    folder = tmp_path / "images"
    folder.mkdir()
    order = [i % len(photos) for i in range(10)]
    files = [folder / f"{n:02d}{photos[k].suffix}" for n, k in enumerate(order)]
    for n, k in enumerate(order):
        files[n].write_bytes(photos[k].read_bytes())
    texts = [f"a photo of thing number {i}" for i in range(20)]
    text_file = tmp_path / "texts.txt"
    text_file.write_text("\n".join(texts) + "\n")
    out = tmp_path / "x.npy"
    result = run("embed", "--image-dir", str(folder), "--text-file", str(text_file),
                 "--out", str(out), "--json", "--url", server.grpc_url)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["index"] for line in lines] == list(range(30))
    assert [line["item"] for line in lines] == [str(f) for f in files] + texts
    assert [line["kind"] for line in lines] == ["image"] * 10 + ["text"] * 20
    embeddings = np.load(out)
    assert embeddings.shape[0] == 30 and embeddings.dtype == np.float32
    expected_images = reference_image_embeddings(clip_reference, photos)[order]
    model, _, tokenizer = clip_reference
    with torch.no_grad():
        expected_texts = model.encode_text(tokenizer(texts), normalize=True).numpy()
    assert cosine(embeddings[:10], expected_images).min() >= 0.9999
    assert cosine(embeddings[10:], expected_texts).min() >= 0.9999
    # without --out, each line carries its vector
    result = run("embed", "--text-file", str(text_file), "--json", "--batch-size", "7",
                 "--url", server.http_url, "--protocol", "http")
    assert result.returncode == 0, result.stderr
    vectors = np.array([json.loads(line)["embedding"] for line in result.stdout.splitlines()])
    assert np.abs(vectors - embeddings[10:]).max() < 1e-5


def test_status_json(server):
    result = run("status", "--json", "--url", server.http_url)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["live"] is True and status["server"] == server.http_url
    models = {m["name"]: m for m in status["models"]}
    assert models["clip_classify"]["state"] == "READY"
    assert models["clip_image_encoder"]["details"]["weights"] not in ("", "random")
    assert status["host"]["cores"] >= 1


def test_track_json_lines_per_frame(server, tmp_path):
    from tests.helpers import clip_jpegs
    from tritonlens.client.sam2.track import Point, Sam2VideoClient

    frames = clip_jpegs(4)
    for t, jpeg in enumerate(frames):
        (tmp_path / f"frame{t:03d}.jpg").write_bytes(jpeg)
    result = run("track", str(tmp_path), "--point", "0:170,120", "--json", "--url", server.grpc_url)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    expected = list(Sam2VideoClient(server.grpc_url).track(tmp_path, {0: [Point(170, 120, 1, 1)]}))
    assert [line["frame"] for line in lines] == [0, 1, 2, 3]
    for line, frame in zip(lines, expected):
        assert [o["object_id"] for o in line["objects"]] == [1]
        area = int(frame.masks[0].sum())
        assert abs(line["objects"][0]["area"] - area) <= 0.01 * max(area, 100)
