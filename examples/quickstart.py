"""Analyse a face photo with ForgeryTalker the way a user does: AutoModel + AutoProcessor → generate → answers.

Until the default trained model ships with the package, this builds a tiny *untrained* model offline, saves
it and loads it back through `AutoModel.from_pretrained`, so the mask, regions and report it prints show
the interface, not a real verdict. Pass `--model PATH` to use a trained checkpoint instead.

    python examples/quickstart.py [IMAGE] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from PIL import Image
from transformers import AutoModel, AutoProcessor

import forgerytalker  # noqa: F401  (registers the Auto classes)
from forgerytalker.tiny import build_tiny_model_and_processor


def sample_face() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="a face photo (default: scikit-image's astronaut sample)")
    parser.add_argument("--model", help="a ForgeryTalker checkpoint folder or hub id (default: a tiny untrained model)")
    args = parser.parse_args()

    model_path = args.model
    if model_path is None:
        model_path = tempfile.mkdtemp(prefix="forgerytalker-tiny-")
        tiny_model, tiny_processor = build_tiny_model_and_processor(image_size=64)
        tiny_model.save_pretrained(model_path)
        tiny_processor.save_pretrained(model_path)

    model = AutoModel.from_pretrained(model_path).eval()
    processor = AutoProcessor.from_pretrained(model_path)
    image = Image.open(args.image).convert("RGB") if args.image else sample_face()

    outputs = model.generate(**processor(images=image), max_new_tokens=40)
    result = processor.post_process_generation(outputs, target_sizes=[image.size[::-1]])[0]

    mask = result.pop("mask")
    top_regions = dict(sorted(result.pop("region_probabilities").items(), key=lambda item: -item[1])[:5])
    print(json.dumps({
        "image": args.image or "skimage.data.astronaut()",
        "model": model_path if args.model else "tiny untrained model (demo of the interface)",
        "report": result["report"],
        "regions": result["regions"],
        "top_region_probabilities": {name: round(p, 3) for name, p in top_regions.items()},
        "mask_forged_fraction": round(float(mask.float().mean()), 4),
        "mask_size": list(mask.shape),
        "mask_confidence": round(result["mask_confidence"], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
