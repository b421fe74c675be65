"""Helpers shared by the test modules (no test module imports another): the test models'
names and sizes, the in-process references (open_clip, sam2's predictors), real inputs
(photos' prompts, clips, the tokenizer corpus) and the Grafana dashboard's queries.

Fixtures are in tests/conftest.py (both kinds of test) and tests/server/conftest.py (the
exported repository and the server).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from torchvision.transforms import Compose

from tritonlens.client.sam2.video import encode_frame, pan_zoom_frames
from tritonlens.serve.texts import DEFAULT_MAX_TEXT_BYTES


# The test models: small architectures and resolutions keep the default run fast (CLIP
# ViT-S-32; the README's main job uses ViT-B-32).
CLIP_TEST_MODEL = "ViT-S-32"


CLIP_TEST_LABELS = ["cat", "dog", "cup of coffee", "astronaut", "rocket", "galaxy",
                    "man with a camera", "horse", "car", "pizza"]


CLIP_TEST_TEMPLATES = ["a photo of a {}.", "a blurry photo of a {}.", "a close-up photo of a {}."]


# SAM 2: hiera-tiny at a small input size (the released checkpoints use 1024 px).
SAM2_TEST_CONFIG = "sam2.1_hiera_t"


SAM2_TEST_IMAGE_SIZE = 256


# -- CLIP: open_clip in-process, the reference of every CLIP parity test
def reference_pixels(preprocess, path) -> np.ndarray:
    """open_clip's eval transform without ToTensor/Normalize: uint8 [S, S, 3]."""
    without_tensor = Compose(preprocess.transforms[:-2])
    return np.asarray(without_tensor(Image.open(path)))


def reference_image_embeddings(clip_reference, paths) -> np.ndarray:
    model, preprocess, _ = clip_reference
    batch = torch.stack([preprocess(Image.open(p)) for p in paths])
    with torch.no_grad():
        return model.encode_image(batch, normalize=True).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def reference_probabilities(clip_reference, photos) -> np.ndarray:
    """open_clip's zero-shot recipe in-process, with the model's own logit scale."""
    import open_clip

    model, _, tokenizer = clip_reference
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(
            model, tokenizer, CLIP_TEST_LABELS, CLIP_TEST_TEMPLATES, device="cpu")
        features = torch.from_numpy(reference_image_embeddings(clip_reference, photos))
        return (model.logit_scale.exp() * features @ classifier).softmax(dim=-1).numpy()


# -- CLIP's tokenizer: the corpus checked token for token (in-process and served)
BOUND = DEFAULT_MAX_TEXT_BYTES


def random_texts(n: int, seed: int = 0) -> list[str]:
    """Texts of random code points from mixed ranges (ASCII, Latin-1, combining marks,
    Cyrillic, CJK, Hangul, emoji, spaces, controls), 0 to 60 characters."""
    rng = np.random.default_rng(seed)
    ranges = [(0x20, 0x7E), (0x00, 0x1F), (0xA0, 0xFF), (0x300, 0x36F), (0x400, 0x4FF),
              (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0x1F300, 0x1F64F), (0x2000, 0x206F),
              (0x30, 0x39), (0xFF01, 0xFF5E)]
    texts = []
    for _ in range(n):
        chars = []
        for _ in range(rng.integers(0, 60)):
            low, high = ranges[rng.integers(len(ranges))]
            chars.append(chr(int(rng.integers(low, high + 1))))
        texts.append("".join(chars))
    return texts


def at_bound(unit: str) -> str:
    """``unit`` repeated to exactly BOUND bytes of UTF-8 (cut at a character edge)."""
    data = (unit * (BOUND // len(unit.encode()) + 1)).encode()[:BOUND]
    return data.decode("utf-8", errors="ignore")


CORPUS = [
    "", " ", "\t\n \u3000\u00a0 ", "a", "A photo of a CAT.", "a photo of a cat",
    "Hello, world!!! (really?) [yes] {no} <b>bold</b> #tag @user ~/path_to/file.txt",
    "it's IT'S we'll they'd I'm you're we've don't CAN'T",
    "3.14159 2024-01-01 1,000,000 $5 50% 0x1F 42nd ½ ² ٣ 七",
    "😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️ ☕ 🏳️‍🌈 😂😂😂😂😂😂😂😂😂",
    "naïve café résumé Ångström Ünïcödé São Paulo Œuvre straße ß İstanbul ΣΑΣ ǅ",
    "cafe\u0301 nai\u0308ve",  # decomposed accents
    "日本語のテキスト 中文字 한국어 텍스트 ไทย العربية हिन्दी кошка ελληνικά",
    "Tom &amp; Jerry &lt;3 &quot;quoted&quot; &#39;single&#39; &amp;amp; &nbsp;x &eacute;",
    "The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.",  # ftfy fixes this mojibake
    "Ã©tÃ© Ã  la plage",
    "spaces    and\ttabs\n\nand\r\nnewlines   ",
    "<start_of_text> <END_OF_TEXT> a<end_of_text>b",
    "\x00\x01 control \x7f chars \u200b zero width \ufeff",
    "https://example.com/a?b=c&d=e#frag user@example.com",
    "a photo of a " + "very " * 400,
    "x " * 200,
    "supercalifragilisticexpialidocious" * 20,
    at_bound("a photo of a cat, "), at_bound("é"), at_bound("😂"), at_bound("中"),
    at_bound("abcdefghijklmnopqrstuvwxyz"), at_bound("&amp; "), at_bound("1"),
]


# -- SAM 2 images: prompts and sam2's SAM2ImagePredictor as a user calls it
# Prompts as fractions of (width, height), so they fit every photo.
CASES = {
    "one point": dict(points=[(0.5, 0.45)], labels=[1]),
    "several points": dict(points=[(0.5, 0.45), (0.15, 0.85), (0.7, 0.3)], labels=[1, 0, 1]),
    "box": dict(box=(0.2, 0.15, 0.8, 0.9)),
    "box and points": dict(box=(0.2, 0.15, 0.8, 0.9), points=[(0.5, 0.5), (0.25, 0.2)],
                           labels=[1, 0]),
}


PHOTOS = ("chelsea_cat.jpg", "astronaut.webp")


def rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def scaled(case: dict, width: int, height: int) -> dict:
    """The case's prompt in pixels of a width x height photo."""
    out = {}
    if "points" in case:
        out["points"] = [(x * width, y * height) for x, y in case["points"]]
        out["labels"] = case["labels"]
    if "box" in case:
        x0, y0, x1, y1 = case["box"]
        out["box"] = (x0 * width, y0 * height, x1 * width, y1 * height)
    return out


def reference(predictor, prompt: dict, multimask: bool, mask_input=None):
    """SAM2ImagePredictor.predict as a user calls it (box= for a box)."""
    return predictor.predict(
        point_coords=np.array(prompt["points"], np.float32) if "points" in prompt else None,
        point_labels=np.array(prompt["labels"], np.int32) if "points" in prompt else None,
        box=np.array(prompt["box"], np.float32) if "box" in prompt else None,
        mask_input=mask_input, multimask_output=multimask)


# -- Grafana dashboard (docker/grafana)
DOCKER = Path(__file__).resolve().parents[1] / "docker"


DASHBOARD = DOCKER / "grafana" / "tritonlens-dashboard.json"


METRIC = re.compile(r"\b(nv_[a-z_]+)\b")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(board: dict) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template queries."""
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def metric_names(board: dict) -> set[str]:
    """The Triton metric names (``nv_...``) the dashboard's queries use."""
    return {name for expr in queries(board) for name in METRIC.findall(expr)}


# -- SAM 2 video: a real clip, a prompt schedule and the offline reference
TRACK_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
TRACK_FRAMES = 16  # >= 16: the offline predictor's object-pointer window equals a stream's

# frame -> list of (object id, [(x, y, label), ...]) in pixels of a 240x320 frame. Object 1
# is clicked on frame 0, object 2 is added with a box on frame 5, object 1 gets a corrective
# background + foreground click on frame 10.
SCHEDULE = {
    0: [(1, [(170.0, 120.0, 1)])],
    5: [(2, [(40.0, 60.0, 2), (150.0, 200.0, 3)])],
    10: [(1, [(120.0, 100.0, 0), (180.0, 130.0, 1)])],
}


def clip_jpegs(count: int = TRACK_FRAMES, photo: str = "chelsea") -> list[bytes]:
    """A pan/zoom over a scikit-image photo, as JPEG bytes (240 x 320)."""
    import skimage.data

    return [encode_frame(f, quality=90) for f in pan_zoom_frames(getattr(skimage.data, photo)(), count)]


def prompt_arrays(entries):
    """SCHEDULE entries -> (coords fp32 [P, 2], labels int32 [P], object ids int32 [P])."""
    coords, labels, ids = [], [], []
    for obj, points in entries:
        for x, y, label in points:
            coords.append((x, y))
            labels.append(label)
            ids.append(obj)
    return (np.array(coords, np.float32), np.array(labels, np.int32), np.array(ids, np.int32))


def seeded_weights(image_size: int, seed: int = 7) -> dict:
    """Seeded random SAM 2.1 hiera-tiny weights (no checkpoint can be downloaded here)."""
    from tritonlens.serve.sam2 import build_video_model

    torch.manual_seed(seed)
    return build_video_model(TRACK_CONFIG, image_size).state_dict()


def reference_track(weights: dict, image_size: int, jpegs: list[bytes],
                    schedule=SCHEDULE) -> dict[int, dict[int, np.ndarray]]:
    """frame -> {object id: fp32 [H, W] logits} from ``SAM2VideoPredictor`` in-process,
    driven frame by frame: propagate to t-1, add a new object's prompt at t and propagate
    from t; for a correction, propagate to t, add the clicks at t, propagate from t+1 (the
    corrected frame's result is what add_new_points_or_box returns)."""
    from tritonlens.serve.sam2 import build_video_model

    predictor = build_video_model(TRACK_CONFIG, image_size, weights)
    results: dict[int, dict[int, np.ndarray]] = {}

    def keep(frame, ids, masks):
        results[frame] = {int(o): masks[i, 0].float().numpy().copy() for i, o in enumerate(ids)}

    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        for i, data in enumerate(jpegs):
            Path(folder, f"{i:05d}.jpg").write_bytes(data)
        state = predictor.init_state(folder, offload_video_to_cpu=True)
        done = -1  # last frame propagated

        def propagate(start, end):
            nonlocal done
            if end < start:
                return
            for frame, ids, masks in predictor.propagate_in_video(
                    state, start_frame_idx=start, max_frame_num_to_track=end - start):
                keep(frame, ids, masks)
            done = end

        for t in sorted(schedule):
            tracked = set(state["obj_ids"])
            correction = any(obj in tracked for obj, _ in schedule[t])
            propagate(done + 1, t if correction else t - 1)
            for obj, points in schedule[t]:
                coords = [(x, y) for x, y, _ in points]
                labels = [label for _, _, label in points]
                box = None
                if 2 in labels:
                    box = [*coords[labels.index(2)], *coords[labels.index(3)]]
                    keep_pts = [i for i, l in enumerate(labels) if l in (0, 1)]
                    coords = [coords[i] for i in keep_pts]
                    labels = [labels[i] for i in keep_pts]
                frame, ids, masks = predictor.add_new_points_or_box(
                    state, frame_idx=t, obj_id=obj, points=coords or None,
                    labels=labels or None, box=box)
            if correction:
                keep(t, ids, masks)
                done = t
        propagate(done + 1, len(jpegs) - 1)
    return results


SHORT_IDLE_S = 4.0  # Triton's: 2x; a loaded host's encoder can hold a frame for seconds
# The stream-limit test's tracker: 2 streams, a long idle limit (nothing is evicted while
# the test runs, however slow the host).
FEW_STREAMS = 2


def export_short_idle_tracker(repo: Path, checkpoint: Path, config: str, image_size: int) -> None:
    """Two more trackers + ensembles: ``sam2_track_short_idle`` with a SHORT_IDLE_S idle limit
    and 4 streams, for the eviction test (the main one keeps the default 60 s so slow CI hosts
    never evict a live stream), and ``sam2_track_few_streams`` with FEW_STREAMS streams and
    the default idle limit, for the stream-limit test."""
    from tritonlens.export.sam2.export import load_sam2, resolve_config
    from tritonlens.export.sam2.tracker import TrackerExportOptions, export_sam2_tracker

    sam, _ = load_sam2(config, str(checkpoint), image_size)
    export_sam2_tracker(sam, repo, TrackerExportOptions(
        sam2_config=resolve_config(config)[0], image_size=image_size, threads=1,
        idle_us=int(SHORT_IDLE_S * 1e6), max_streams=4,
        tracker="sam2_tracker_short_idle", ensemble="sam2_track_short_idle"))
    export_sam2_tracker(sam, repo, TrackerExportOptions(
        sam2_config=resolve_config(config)[0], image_size=image_size, threads=1,
        max_streams=FEW_STREAMS, tracker="sam2_tracker_few_streams",
        ensemble="sam2_track_few_streams"))


# -- Hugging Face tokenizers made locally (no hub here)
# Small Hugging Face tokenizer folders made locally, standing in for the ones open_clip
# downloads from the Hub (no hub is reachable from the tests).
#
# Each is trained with the ``tokenizers`` package on a short corpus and saved as a folder that
# ``transformers.AutoTokenizer`` loads (``tokenizer.json`` + ``tokenizer_config.json``), shaped
# like the real ones:
#
# * :func:`t5_like`: SigLIP's (``timm/ViT-B-16-SigLIP``): SentencePiece Unigram with Metaspace
#   pre-tokenizing, ``</s>`` appended, pad token ``</s>`` (id 1), class ``T5Tokenizer``;
# * :func:`bert_like`: CLIPA's (``bert-base-uncased``): lower-casing WordPiece,
#   ``[CLS] ... [SEP]``, pad ``[PAD]`` (id 0), class ``BertTokenizer``;
# * :func:`bpe_left_padded`: a byte-level BPE with ``<s> ... </s>``, class
#   ``PreTrainedTokenizerFast`` (tokenizer.json taken as is), padded and truncated on the left,
#   to exercise the sides.
SENTENCES = [
    "a photo of a cat", "a photo of a dog", "a blurry photo of a bee on a flower",
    "a diagram of a rocket", "a chart of the galaxy", "the quick brown fox jumps over the lazy dog",
    "an astronaut riding a horse on the moon", "a cup of coffee on a wooden table",
    "it's a close-up photo, isn't it? yes: 3.14 and 42!", "naïve café résumé straße",
    "日本語のテキスト 中文字 кошка ελληνικά", "Tom & Jerry <3 (really) [yes] {no} #tag @user",
]


def _corpus() -> list[str]:
    return SENTENCES * 20 + [s.upper() for s in SENTENCES] * 5


def _save(tokenizer: Tokenizer, folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return folder


def t5_like(folder: Path, vocab_size: int = 300) -> Path:
    """SigLIP-style tokenizer folder (ids: <pad> 0, </s> 1, <unk> 2)."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" +", " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(_corpus(), trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return _save(tokenizer, folder, {"tokenizer_class": "T5Tokenizer", "extra_ids": 0,
                                     "pad_token": "</s>", "eos_token": "</s>", "unk_token": "<unk>",
                                     "model_max_length": 64})


def bert_like(folder: Path, vocab_size: int = 300) -> Path:
    """CLIPA-style tokenizer folder ([PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(_corpus(), trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return _save(tokenizer, folder, {"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                                     "pad_token": "[PAD]", "sep_token": "[SEP]", "cls_token": "[CLS]",
                                     "unk_token": "[UNK]", "mask_token": "[MASK]"})


def bpe_left_padded(folder: Path, vocab_size: int = 400) -> Path:
    """Byte-level BPE folder (<pad> 0, <s> 1, </s> 2), padded and truncated on the left."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    return _save(tokenizer, folder, {"tokenizer_class": "PreTrainedTokenizerFast",
                                     "pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>",
                                     "padding_side": "left", "truncation_side": "left"})


# Texts the Hugging Face tokenizer tests run (the CLIP corpus, random texts, more).
TEXTS = CORPUS + random_texts(200) + [
    "A_photo_of: a CAT!!", "__init__ snake_case", "word " * 80, "<pad> </s> [SEP] [CLS] <s>"]


# -- the launcher's command line without starting anything
def command(server) -> list[str]:
    """The ``tritonserver`` command line ``server`` (a TritonServer) would run, with a made-up
    install under its repository (nothing is started)."""
    from tritonlens.launcher.install import TritonInstall

    root = server.model_repository
    install = TritonInstall(*(root / name for name in ("bin", "libs", "py", "stub", "caches")))
    return server.command(install, root / "backends")


# -- running a documented recipe as written (the README's Quick start, the docs pages')
SERVE = re.compile(r"^tritonlens serve\b")

# Runs inside the namespace: part A, then serve in the background until "ready", part B,
# then Ctrl-C (SIGINT) to serve. Prints one JSON line with every step's outcome.
DRIVER = r'''
import json, os, re, signal, subprocess, sys, time
work, before, serve, after = sys.argv[1:5]
env_file = os.path.join(work, ".env_after_part_a")
result = {}
a = subprocess.run(["bash", "-ec", before + f'\nenv -0 > "{env_file}"'], cwd=work,
                   capture_output=True, text=True, timeout=900)
result["before"] = [a.returncode, (a.stdout + a.stderr)[-6000:]]
if a.returncode == 0:
    env = dict(item.split("=", 1) for item in open(env_file).read().split("\0") if "=" in item)
    log = open(os.path.join(work, "serve.log"), "w+")
    srv = subprocess.Popen(["bash", "-ec", "exec " + serve], cwd=work, env=env, stdout=log,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and srv.poll() is None:
        log.seek(0)
        if re.search(r"^(ready|serving, NOT ready)\b", log.read(), re.MULTILINE):
            break
        time.sleep(0.5)
    try:
        b = subprocess.run(["bash", "-ec", after], cwd=work, env=env, capture_output=True,
                           text=True, timeout=600)
        result["after"] = [b.returncode, (b.stdout + b.stderr)[-8000:]]
    finally:
        srv.send_signal(signal.SIGINT)
        try:
            code = srv.wait(60)
        except subprocess.TimeoutExpired:
            srv.kill()
            code = srv.wait()
    log.seek(0)
    result["serve"] = [code, log.read()[-8000:]]
print(json.dumps(result))
'''


def split_at_serve(lines: list[str]) -> tuple[str, str, str]:
    """(script before serve, the serve command without its comment, script after)."""
    index = [i for i, line in enumerate(lines) if SERVE.match(line)]
    assert len(index) == 1, "the Quick start has exactly one `tritonlens serve` line"
    serve = lines[index[0]].split("#", 1)[0].strip()
    return "\n".join(lines[:index[0]]), serve, "\n".join(lines[index[0] + 1:])


def namespace_prefix() -> list[str] | None:
    """A command prefix running in a private network namespace with loopback up, or None."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return None
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up"],
                           capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def ports_free(ports=(8000, 8001, 8002)) -> bool:
    for port in ports:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


def marked_block(text: str, begin: str, end: str, where: str) -> list[str]:
    """The shell lines of the one fenced code block between the ``begin`` and ``end`` markers
    of a README or docs page (``where`` names it in the failures)."""
    assert begin in text and end in text, f"{where} lost its markers {begin} / {end}"
    lines = text.split(begin, 1)[1].split(end, 1)[0].strip().splitlines()
    assert lines[0].startswith("```") and lines[-1] == "```", f"the block of {where} is one code block"
    return lines[1:-1]


def run_recipe(lines: list[str], tmp_path: Path, ports=(8000, 8001, 8002), env: dict | None = None,
               prepare=None) -> tuple[Path, dict]:
    """Run a documented recipe as written: the lines before ``tritonlens serve``, the server in
    the background until ready, the lines after, then Ctrl-C; in a private network namespace
    when there is one (so its fixed ports are free), else on this host's ports.

    The work folder (returned) holds links to this checkout's ``.venv`` and ``examples``;
    ``prepare(work)`` may add files first. Returns ``(work, result)``: result maps ``before``,
    ``after`` and ``serve`` to ``[exit code, output tail]``. Skips when neither a namespace
    nor the ports are free.
    """
    import os
    import sys

    import pytest

    root = Path(__file__).resolve().parents[1]
    before, serve, after = split_at_serve(lines)
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(root / ".venv")
    (work / "examples").symlink_to(root / "examples")
    if prepare is not None:
        prepare(work)
    prefix = namespace_prefix()
    if prefix is None and not ports_free(ports):
        pytest.skip(f"no network namespace available and ports {ports} are busy")
    run_env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), **(env or {}))  # private API-key files
    run_env.pop("TRITONLENS_API_KEY", None)
    proc = subprocess.run([*(prefix or []), sys.executable, "-c", DRIVER, str(work), before, serve, after],
                          env=run_env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work, json.loads(proc.stdout.strip().splitlines()[-1])
