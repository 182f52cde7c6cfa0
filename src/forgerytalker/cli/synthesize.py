"""`forgerytalker data synthesize`: forged faces with masks and reports, from a folder of face photos."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_LOCAL_METHODS = ("classical_inpainting", "region_transplant")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "synthesize",
        help="make MMTT-style forgeries (image, mask, report) from face photos",
        description="Detects and aligns the faces in --faces, forges them (classical inpainting, region transplant, "
        "face swap) or leaves some untouched, writes a report per sample and saves everything in the released "
        "MMTT layout under --out. Re-running the same command resumes an interrupted run.",
    )
    parser.add_argument("--faces", type=Path, required=True, help="folder of face photos (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (released MMTT layout)")
    parser.add_argument("--num-samples", type=int, required=True, help="number of samples to make")
    parser.add_argument("--seed", type=int, default=0, help="fixes every sample (default 0)")
    parser.add_argument("--authentic-rate", type=float, default=0.1, help="share of untouched photos (default 0.1)")
    parser.add_argument(
        "--whole-face-rate", type=float, default=0.2, help="share of forgeries that swap the whole face (default 0.2)"
    )
    parser.add_argument("--max-regions", type=int, default=11, help="local forgeries edit k in [1, this] regions")
    parser.add_argument(
        "--local-methods",
        nargs="+",
        default=list(DEFAULT_LOCAL_METHODS),
        metavar="METHOD",
        help=f"methods drawn for local forgeries (default: {' '.join(DEFAULT_LOCAL_METHODS)})",
    )
    parser.add_argument("--eval-every", type=int, default=10, help="every N-th sample goes to eval (0: none)")
    parser.add_argument(
        "--max-upscale", type=float, default=2.0, help="skip faces needing more enlargement to fill 512x512 (default 2)"
    )
    parser.add_argument("--min-detection-score", type=float, default=0.2, help="dlib detector score threshold")
    parser.add_argument("--num-workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.synthesis import SynthesisConfig, synthesize

    if args.num_samples < 1 or not 0 <= args.authentic_rate <= 1 or not 0 <= args.whole_face_rate <= 1:
        print("error: --num-samples must be positive and the rates in [0, 1]")
        return 2
    if not args.faces.is_dir():
        print(f"error: --faces {args.faces} is not a folder")
        return 2
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
        num_workers=args.num_workers,
        show_progress=not args.no_progress,
    )
    try:
        summary = synthesize(config)
    except ValueError as error:
        print(f"error: {error}")
        return 1
    counts = summary["counts"]
    methods = ", ".join(f"{method} {count}" for method, count in counts["methods"].items())
    print(f"wrote {args.num_samples} samples to {args.out} ({counts['train']} train, {counts['eval']} eval): {methods}")
    print(f"{counts['usable_faces']} faces from {counts['photos']} photos; {len(summary['skipped'])} photos or faces skipped")
    return 0
