"""Example faces for the demo, drawn here (no photo of a real person, no licence to track).

Each is a drawn face of `EXAMPLE_SIZE` pixels with shading and noise so that it looks like a picture rather than
a flat graphic; two of them carry a local manipulation (a blurred, recoloured eye; a mouth pasted from another
face), the kind of edit the model is meant to localise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

EXAMPLE_SIZE = 256
EXAMPLES = ("drawn_face_authentic.png", "drawn_face_edited_eye.png", "drawn_face_pasted_mouth.png")
_SKIN = ((224, 180, 150), (196, 146, 112), (150, 105, 80))
_HAIR = ((60, 40, 30), (20, 20, 25), (120, 80, 40))


def draw_face(seed: int, size: int = EXAMPLE_SIZE) -> Image.Image:
    """A drawn face, different for each seed: skin tone, hair, eye and mouth shapes vary."""
    rng = np.random.default_rng(seed)
    skin, hair = _SKIN[seed % 3], _HAIR[seed % 3]
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(150, 220, 3)))
    draw = ImageDraw.Draw(image)
    s = size / 256
    draw.ellipse((58 * s, 20 * s, 198 * s, 150 * s), fill=hair)
    draw.ellipse((68 * s, 40 * s, 188 * s, 220 * s), fill=skin)
    eye_y, eye_dx, eye_w = (105 + rng.integers(-5, 5)) * s, (30 + rng.integers(-4, 4)) * s, (14 + rng.integers(0, 4)) * s
    for side in (-1, 1):
        cx = 128 * s + side * eye_dx
        draw.ellipse((cx - eye_w, eye_y - 7 * s, cx + eye_w, eye_y + 7 * s), fill=(245, 245, 240))
        draw.ellipse((cx - 6 * s, eye_y - 6 * s, cx + 6 * s, eye_y + 6 * s), fill=(70, 50, 30))
        draw.ellipse((cx - 3 * s, eye_y - 3 * s, cx + 3 * s, eye_y + 3 * s), fill=(10, 10, 10))
        draw.line((cx - eye_w, eye_y - 16 * s, cx + eye_w, eye_y - 19 * s), fill=hair, width=max(1, int(4 * s)))
    shade = tuple(int(v * 0.85) for v in skin)
    draw.polygon([(128 * s, 112 * s), (118 * s, 152 * s), (138 * s, 152 * s)], fill=shade)
    mouth_y, mouth_w = (180 + rng.integers(-4, 4)) * s, (24 + rng.integers(-4, 6)) * s
    draw.chord((128 * s - mouth_w, mouth_y - 10 * s, 128 * s + mouth_w, mouth_y + 10 * s), 0, 180, fill=(170, 60, 70))
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.2 * s)), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size] / size
    light = 0.85 + 0.3 * (1 - np.hypot(xx - 0.4, yy - 0.35))[..., None]
    pixels = pixels * light + rng.normal(0, 4, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def edit_eye(face: Image.Image) -> Image.Image:
    """The face with its left eye blurred and tinted, a local edit with a soft seam."""
    s = face.width / 256
    box = tuple(int(v * s) for v in (78, 88, 120, 122))
    patch = face.crop(box).filter(ImageFilter.GaussianBlur(3 * s))
    patch = Image.blend(patch, Image.new("RGB", patch.size, (150, 110, 160)), 0.25)
    edited = face.copy()
    edited.paste(patch, box[:2])
    return edited


def paste_mouth(face: Image.Image, donor: Image.Image) -> Image.Image:
    """The face with the mouth region of `donor` pasted in, without blending."""
    s = face.width / 256
    box = tuple(int(v * s) for v in (96, 164, 160, 198))
    edited = face.copy()
    edited.paste(donor.crop(box), box[:2])
    return edited


def write_example_faces(folder: str | Path) -> list[Path]:
    """Writes the `EXAMPLES` into `folder` (once; existing files are kept) and returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    faces = [draw_face(0), edit_eye(draw_face(1)), paste_mouth(draw_face(2), draw_face(3))]
    paths = []
    for name, face in zip(EXAMPLES, faces):
        path = folder / name
        if not path.exists():
            face.save(path)
        paths.append(path)
    return paths


__all__ = ["EXAMPLES", "EXAMPLE_SIZE", "draw_face", "edit_eye", "paste_mouth", "write_example_faces"]
