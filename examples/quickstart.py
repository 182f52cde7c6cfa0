"""Analyse a face photo with ForgeryTalker the way a user does: AutoModel + AutoProcessor → generate → answers.

The photo's largest face is aligned as the training faces are (`forgerytalker.aligned_faces`) and the model
answers about that face: its mask is in the aligned crop's coordinates.

Without `--model` it uses the demo model bundled in the package (`forgerytalker.default_model()`): trained on
forgeries synthesized from UTKFace's faces (non-commercial research use only) and sample photos
(docs/RESULTS.md), a demonstration of the interface, not a detector for real-world deepfakes. Pass
`--model PATH` (a folder or hub id) to use a trained checkpoint.

    python examples/quickstart.py [IMAGE] [--model PATH]
"""

from __future__ import annotations

import argparse
import json

from PIL import Image
from transformers import AutoModel, AutoProcessor

import forgerytalker
from forgerytalker.analysis.defaults import verdict


def sample_face() -> tuple[Image.Image, str]:
    """scikit-image's astronaut photo when scikit-image is installed (the test extra), else a face the demo draws."""
    try:
        from skimage import data
    except ImportError:
        from forgerytalker.demo.examples import draw_face

        return draw_face(seed=0), "a drawn face (forgerytalker.demo.examples.draw_face; install scikit-image for a photo)"
    return Image.fromarray(data.astronaut()), "skimage.data.astronaut()"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="a face photo (default: scikit-image's astronaut sample)")
    parser.add_argument("--model", help="a ForgeryTalker checkpoint folder or hub id (default: the bundled demo model)")
    args = parser.parse_args()

    model_path = args.model or forgerytalker.default_model()
    model = AutoModel.from_pretrained(model_path).eval()
    processor = AutoProcessor.from_pretrained(model_path)
    image, name = (Image.open(args.image).convert("RGB"), args.image) if args.image else sample_face()

    # models are trained on aligned faces: analyse the photo's largest face, aligned the same way (the whole
    # picture when no face is found); `forgerytalker.analyze` does this for every face and maps the masks back
    faces = forgerytalker.aligned_faces(image, faces="largest")
    face = faces[0].image if faces else image
    outputs = model.generate(**processor(images=face))
    result = processor.post_process_generation(outputs, target_sizes=[face.size[::-1]])[0]

    mask = result.pop("mask")
    top_regions = dict(sorted(result.pop("region_probabilities").items(), key=lambda item: -item[1])[:5])
    print(json.dumps({
        "image": name,
        "face_box": list(faces[0].box) if faces else None,
        "model": model_path if args.model else "bundled demo model (see docs/RESULTS.md)",
        "verdict": verdict(bool(result["regions"]), model_path),  # manipulated when a region is above the threshold
        "report": result["report"],
        "regions": result["regions"],
        "top_region_probabilities": {name: round(p, 3) for name, p in top_regions.items()},
        "mask_forged_fraction": round(float(mask.float().mean()), 4),
        "mask_size": list(mask.shape),
        "mask_confidence": None if result["mask_confidence"] is None else round(result["mask_confidence"], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
