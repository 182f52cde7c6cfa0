"""Draws a contact sheet of synthesized samples: forged image, mask and wrapped report for each.

    python benchmarks/make_contact_sheet.py --faces ../shared/faces --out docs/synthesis-contact-sheet.png

Synthesizes into a temporary folder (or reads `--from-dir`, an existing synthesis output) and lays out 16
samples, taken from each method in turn so that every method shows. Only synthesized images are drawn.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import textwrap
from itertools import zip_longest
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from forgerytalker.data.methods import AUTHENTIC
from forgerytalker.data.synthesis.pipeline import SUMMARY_FILE, SynthesisConfig, synthesize

TILE = 224
TEXT_HEIGHT = 124
COLUMNS = 4
MARGIN = 8
MAX_AUTHENTIC = 2


def pick_samples(output_dir: Path, count: int) -> list[dict]:
    """`count` sidecars of an output folder, alternating between methods (in index order within each), with at
    most `MAX_AUTHENTIC` untouched samples."""
    sidecars = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((output_dir / "samples").glob("syn*.json"))]
    by_method: dict[str, list[dict]] = {}
    for sidecar in sorted(sidecars, key=lambda s: s["index"]):
        by_method.setdefault(sidecar["method"], []).append(sidecar)
    by_method[AUTHENTIC] = by_method.get(AUTHENTIC, [])[:MAX_AUTHENTIC]
    interleaved = [s for group in zip_longest(*by_method.values()) for s in group if s is not None]
    return interleaved[:count]


def draw_tile(output_dir: Path, sidecar: dict, font: ImageFont.ImageFont) -> Image.Image:
    record = sidecar["record"]
    image = Image.open(output_dir / "dataset" / record["img_path"]).convert("RGB").resize((TILE, TILE), Image.BILINEAR)
    mask = Image.open(output_dir / "dataset" / record["mask_path"]).convert("L").resize((TILE, TILE), Image.NEAREST)
    overlay = Image.composite(Image.new("RGB", (TILE, TILE), (255, 40, 40)), image.convert("L").convert("RGB"), mask)
    tile = Image.new("RGB", (2 * TILE, TILE + TEXT_HEIGHT), "white")
    tile.paste(image, (0, 0))
    tile.paste(Image.blend(image.convert("L").convert("RGB"), overlay, 0.6), (TILE, 0))
    draw = ImageDraw.Draw(tile)
    lines = [f"[{sidecar['method']}]"] + textwrap.wrap(record["caption"], width=74)
    for row, line in enumerate(lines[:8]):
        draw.text((4, TILE + 3 + 15 * row), line, fill=(0, 0, 0), font=font)
    return tile


def make_sheet(output_dir: Path, count: int = 16) -> Image.Image:
    font = ImageFont.load_default(size=12)
    tiles = [draw_tile(output_dir, sidecar, font) for sidecar in pick_samples(output_dir, count)]
    rows = (len(tiles) + COLUMNS - 1) // COLUMNS
    width, height = tiles[0].size
    sheet = Image.new("RGB", (COLUMNS * (width + MARGIN) + MARGIN, rows * (height + MARGIN) + MARGIN), (200, 200, 200))
    for n, tile in enumerate(tiles):
        sheet.paste(tile, (MARGIN + (n % COLUMNS) * (width + MARGIN), MARGIN + (n // COLUMNS) * (height + MARGIN)))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, help="folder of face photos to synthesize from")
    parser.add_argument("--from-dir", type=Path, help="an existing synthesis output folder instead of --faces")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--num-samples", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        output_dir = args.from_dir or Path(scratch)
        if args.from_dir is None or not (output_dir / SUMMARY_FILE).exists():
            synthesize(SynthesisConfig(args.faces, output_dir, args.num_samples, seed=args.seed, num_workers=2))
        make_sheet(output_dir).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
