"""`forgerytalker data synthesize`: forged faces with masks and reports, from a folder of face photos."""

from __future__ import annotations

import argparse
from pathlib import Path

from .arguments import fail, number, whole_number
from .data import JOB_ERROR, USAGE_ERROR, render_error

DEFAULT_LOCAL_METHODS = ("classical_inpainting", "region_transplant")
FLAGS = {
    "faces_dir": "--faces",
    "output_dir": "--out",
    "num_samples": "--num-samples",
    "seed": "--seed",
    "authentic_rate": "--authentic-rate",
    "whole_face_rate": "--whole-face-rate",
    "max_regions": "--max-regions",
    "local_methods": "--local-methods",
    "eval_every": "--eval-every",
    "max_upscale": "--max-upscale",
    "min_detection_score": "--min-detection-score",
    "face_padding": "--face-padding",
    "face_size": "--face-size",
    "jpeg_quality": "--jpeg-quality",
    "max_image_pixels": "--max-image-pixels",
    "allow_changed_faces": "--allow-changed-faces",
    "num_workers": "--num-workers",
}
"""Field of `SynthesisConfig` → the flag that sets it, for error messages."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "synthesize",
        help="make MMTT-style forgeries (image, mask, report) from face photos",
        description="Detects and aligns the faces in --faces, forges them (classical inpainting, region transplant, "
        "face swap) or leaves some untouched, writes a report per sample and saves everything in the released "
        "MMTT layout under --out. Re-running the same command resumes an interrupted run.",
    )
    parser.add_argument("--faces", type=Path, required=True, help="folder of face photos (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (released MMTT layout), not inside --faces")
    parser.add_argument("--num-samples", type=whole_number, required=True, help="number of samples to make")
    parser.add_argument("--seed", type=whole_number, default=0, help="fixes every sample (default 0)")
    parser.add_argument("--authentic-rate", type=number, default=0.1, help="share of untouched photos (default 0.1)")
    parser.add_argument(
        "--whole-face-rate", type=number, default=0.2, help="share of forgeries that swap the whole face (default 0.2)"
    )
    parser.add_argument("--max-regions", type=whole_number, default=11, help="local forgeries edit k in [1, this] regions")
    parser.add_argument(
        "--local-methods",
        nargs="+",
        default=list(DEFAULT_LOCAL_METHODS),
        metavar="METHOD",
        help=f"methods drawn for local forgeries (default: {' '.join(DEFAULT_LOCAL_METHODS)})",
    )
    parser.add_argument("--eval-every", type=whole_number, default=10, help="every N-th sample goes to eval (0: none)")
    parser.add_argument(
        "--max-upscale", type=number, default=2.0, help="skip faces needing more enlargement to fill 512x512 (default 2)"
    )
    parser.add_argument("--min-detection-score", type=number, default=0.2, help="dlib detector score threshold")
    parser.add_argument(
        "--face-padding", type=number, default=0.0,
        help="reflect-pad each photo by this share of its side before detection, for tightly cropped faces (default 0)",
    )
    parser.add_argument(
        "--face-size", type=whole_number, default=512,
        help="side of the written images and masks; samples are made at 512 and resized (default 512)",
    )
    parser.add_argument(
        "--jpeg-quality", type=whole_number, nargs=2, metavar=("LOW", "HIGH"),
        help="JPEG-compress every written image, untouched or forged, at a quality drawn from LOW..HIGH (default: none)",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=whole_number,
        help="skip photos with more pixels (checked before decoding; default 100000000)",
    )
    parser.add_argument(
        "--allow-changed-faces",
        action="store_true",
        help="resume although the photos in --faces changed since the folder's samples were made (the folder then "
        "mixes both photo sets)",
    )
    parser.add_argument("--num-workers", type=whole_number, default=1, help="worker processes (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars, the libraries' too")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.errors import DataInputError, WorkerDiedError
    from ..data.synthesis import SynthesisConfig, synthesize

    config = SynthesisConfig(
        faces_dir=args.faces,
        output_dir=args.out,
        num_samples=args.num_samples,
        seed=args.seed,
        authentic_rate=args.authentic_rate,
        whole_face_rate=args.whole_face_rate,
        max_regions=args.max_regions,
        local_methods=tuple(args.local_methods),
        eval_every=args.eval_every,
        max_upscale=args.max_upscale,
        min_detection_score=args.min_detection_score,
        face_padding=args.face_padding,
        face_size=args.face_size,
        jpeg_quality=tuple(args.jpeg_quality) if args.jpeg_quality else None,
        max_image_pixels=args.max_image_pixels,
        allow_changed_faces=args.allow_changed_faces,
        num_workers=args.num_workers,
        show_progress=not args.no_progress,
    )
    try:
        summary = synthesize(config)
    except DataInputError as error:
        return fail(render_error(error, FLAGS), USAGE_ERROR)
    except WorkerDiedError as error:
        return fail(str(error), JOB_ERROR)
    counts = summary["counts"]
    methods = ", ".join(f"{method} {count}" for method, count in counts["methods"].items())
    print(f"wrote {args.num_samples} samples to {args.out} ({counts['train']} train, {counts['eval']} eval): {methods}")
    print(f"{counts['usable_faces']} faces from {counts['photos']} photos; {len(summary['skipped'])} files or faces skipped:")
    for entry in summary["skipped"]:
        print(f"  {entry['photo']}: {entry['reason']}")
    return 0
