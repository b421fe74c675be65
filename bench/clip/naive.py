"""The naive path users start from: one process per image.

Run as ``python -m tritonlens.bench.clip.naive --model ViT-B-32 --pretrained <ckpt|none>
--labels labels.txt --templates templates.txt --image photo.jpg``. The process does what
a hand-rolled script does for every image: import torch and open_clip, build the model and
load its weights, encode every label in every prompt template (open_clip's
``build_zero_shot_classifier``), preprocess and encode the one image, and print the top-5
labels. It prints one JSON line: ``{"top5": [...], "seconds": <wall s inside the process>,
"peak_rss_mb": <MB>}``. The benchmark times the whole process from the outside.
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--pretrained", default="none", help="checkpoint path, tag or none")
    parser.add_argument("--seed", type=int, default=0, help="random init seed (with none)")
    parser.add_argument("--labels", required=True, help="text file, one class name per line")
    parser.add_argument("--templates", required=True, help="text file, one template per line")
    parser.add_argument("--image", required=True)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()

    import open_clip
    import torch
    from PIL import Image

    if args.threads:
        torch.set_num_threads(args.threads)
    pretrained = None if args.pretrained in ("", "none") else args.pretrained
    if pretrained is None:
        torch.manual_seed(args.seed)
    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=pretrained)
    model.eval()
    tokenizer = open_clip.get_tokenizer(args.model)
    labels = [line.strip() for line in open(args.labels, encoding="utf-8") if line.strip()]
    templates = [line.strip() for line in open(args.templates, encoding="utf-8") if line.strip()]
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(
            model, tokenizer, labels, templates, num_classes_per_batch=8, device="cpu",
            use_tqdm=False)
        image = preprocess(Image.open(args.image)).unsqueeze(0)
        features = model.encode_image(image, normalize=True)
        probs = (model.logit_scale.exp() * features @ classifier).softmax(dim=-1)[0]
    top = probs.topk(min(5, len(labels)))
    print(json.dumps({
        "top5": [[labels[i], round(float(p), 4)] for p, i in zip(top.values, top.indices)],
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
