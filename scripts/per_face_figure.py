"""Draws the README's per-face figure: a portrait and a two-person photo analysed face by face.

    python scripts/per_face_figure.py --faces ../shared/faces [--model PATH] [--out docs/per-face-analysis.png]

Reads the public-domain portraits of the sample face folder (`skimage_astronaut.png`: head and shoulders, a flag
behind; `mpl_grace_hopper.jpg`), puts them side by side as a two-person photo, analyses both photos with
`forgerytalker.analyze` (the bundled demo model unless --model is given) and stacks their `analyze` figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

PORTRAIT = "skimage_astronaut.png"
SECOND = "mpl_grace_hopper.jpg"


def two_person_photo(first: Image.Image, second: Image.Image, height: int = 420) -> Image.Image:
    """The two photos side by side at one height, on a grey strip."""
    scaled = [photo.resize((round(photo.width * height / photo.height), height)) for photo in (first, second)]
    group = Image.new("RGB", (sum(photo.width for photo in scaled) + 40, height + 20), (128, 128, 128))
    group.paste(scaled[0], (10, 10))
    group.paste(scaled[1], (scaled[0].width + 30, 10))
    return group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, required=True, help=f"folder holding {PORTRAIT} and {SECOND}")
    parser.add_argument("--model", help="checkpoint (default: the bundled demo model)")
    parser.add_argument("--out", type=Path, default=Path("docs/per-face-analysis.png"))
    args = parser.parse_args()

    import forgerytalker
    from forgerytalker.analysis.overlay import draw_analysis_figure

    portrait = Image.open(args.faces / PORTRAIT).convert("RGB")
    group = two_person_photo(portrait, Image.open(args.faces / SECOND).convert("RGB"))
    photos = {"portrait (head, shoulders, flag)": portrait, "two people": group}
    analyses = forgerytalker.analyze(list(photos.values()), model=args.model, batch_size=4)
    figures = [draw_analysis_figure(photo, analysis, title=title) for (title, photo), analysis in zip(photos.items(), analyses)]
    sheet = Image.new("RGB", (max(f.width for f in figures), sum(f.height for f in figures)), (255, 255, 255))
    top = 0
    for figure in figures:
        sheet.paste(figure, (0, top))
        top += figure.height
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)  # a third of the size
    for title, analysis in zip(photos, analyses):
        print(title, [(face["face"], face["box"], round(face["manipulation_score"], 2)) for face in analysis.face_analyses])


if __name__ == "__main__":
    main()
