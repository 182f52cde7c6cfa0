"""The heatmap figure of an analysis, drawn with Pillow: the photo with the forgery probability tinted on it,
the 21 region probabilities as a bar chart beside it (for a model with a region map, the located probabilities that
decided which regions are flagged; the dashed line is the threshold they were held to), and the report below.
A photo not called manipulated has its bars in pale grey-blue, without the line, and a caption saying that no
region is named: a region map's located probabilities say where an edit would most likely be *if* the face were
manipulated, so they can cross the line on an untouched face.

    ┌──────────────────────────── file name · manipulation score ──────────────────────────┐
    │  photo + heatmap (longer side PHOTO_SIDE px)   │  eye      ███████▌        0.81        │
    │  white outline: the binary mask                │  pupil    ██▏             0.22        │
    │  colour scale 0 … 1                            │  ...  (flagged regions in red)        │
    ├───────────────────────────────────────────────────────────────────────────────────────┤
    │  report, wrapped                                                                       │
    └───────────────────────────────────────────────────────────────────────────────────────┘

The binary mask PNG keeps the photo's resolution; this figure is for reading, so its photo panel is scaled to
`PHOTO_SIDE` pixels on its longer side. Each analysed face is boxed and numbered on the photo; with several
faces, the bars are the highest probability over the faces and the report part gives each face's score, regions
and report under its number.
"""

from __future__ import annotations

import textwrap
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..regions import REGION_NAMES
from .defaults import verdict

PHOTO_SIDE = 512
BAR_PANEL_WIDTH = 360
MARGIN = 12
TINT_OPACITY = 0.6
"""Opacity of the heatmap colour where the probability is 1 (it fades linearly to 0 with the probability)."""
BACKGROUND = (255, 255, 255)
OUTLINE = (255, 255, 255)
"""Colour of the binary mask's outline on the heatmap."""
TEXT = (20, 20, 20)
MUTED = (110, 110, 110)
FACE_BOX = (40, 200, 255)
"""Colour of the analysed faces' boxes and numbers."""
FLAGGED = (200, 30, 30)
UNFLAGGED = (90, 120, 170)
NOT_IN_FORCE = (175, 185, 200)
"""Colour of the bars of a photo not called manipulated: no region is named, whatever the bars say."""
BAR_CAPTIONS = {
    True: "red: the regions named, above the dashed line",
    False: "not called manipulated, so no region is named (the bars: where an edit would most likely be)",
}
"""The caption under the bars, by whether the photo is called manipulated."""
# Anchor colours of the heatmap, low to high probability (dark purple, red, orange, pale yellow: like "inferno").
_HEAT_ANCHORS = np.array([[40, 10, 90], [180, 30, 70], [245, 120, 20], [252, 240, 150]], dtype=np.float64)


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font at `size` pixels (no system font is needed)."""
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=1)
def heat_lut() -> np.ndarray:
    """uint8 `(256, 3)`: the colour of each probability level."""
    positions = np.linspace(0, 1, len(_HEAT_ANCHORS))
    levels = np.linspace(0, 1, 256)
    return np.stack([np.interp(levels, positions, _HEAT_ANCHORS[:, c]) for c in range(3)], axis=1).astype(np.uint8)


def heatmap_overlay(photo: Image.Image, probabilities: np.ndarray, mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The photo at `size` (width, height) with the probabilities tinted on it and the mask's outline in white.

    Each pixel is `photo * (1 - a) + colour * a` with `a = TINT_OPACITY * p` and `colour = heat_lut()[p]`, the
    probability `p` taken in 256 levels; the blending runs in Pillow's C code (`Image.composite`), a few times
    faster than the same formula in float numpy arrays (it is drawn once a photo).

    Args:
        photo: RGB picture.
        probabilities: float32 `(H, W)` in [0, 1], at the photo's size.
        mask: "L" 0/255 picture at the photo's size.
    """
    base = photo.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    heat = np.asarray(Image.fromarray(probabilities.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))
    levels = np.rint(np.clip(heat, 0.0, 1.0) * 255).astype(np.uint8)
    coloured = Image.frombytes("P", size, levels.tobytes())  # the levels as palette indices into heat_lut()
    coloured.putpalette(heat_lut().tobytes())
    alpha = Image.frombytes("L", size, levels.tobytes()).point(_alpha_table())
    colours = coloured.convert("RGB")
    blended = Image.composite(colours, base, alpha)
    outline = mask.resize(size, Image.Resampling.NEAREST).filter(ImageFilter.FIND_EDGES).point(_outline_table())
    blended.paste(OUTLINE, mask=outline)
    return blended


@lru_cache(maxsize=1)
def _alpha_table() -> list[int]:
    """Probability level -> opacity of its colour, 0..255."""
    return [round(TINT_OPACITY * level) for level in range(256)]


@lru_cache(maxsize=1)
def _outline_table() -> list[int]:
    return [0] + [255] * 255


def _panel_size(width: int, height: int) -> tuple[int, int]:
    scale = PHOTO_SIDE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def draw_face_boxes(picture: Image.Image, faces: list[dict], scale: float) -> Image.Image:
    """Boxes and numbers the analysed faces (`ForgeryAnalysis.face_analyses`) on `picture`, a copy of the photo
    scaled by `scale`; returns it."""
    draw = ImageDraw.Draw(picture)
    label_font = font(max(12, min(22, round(picture.height / 25))))
    for face in faces:
        left, top, right, bottom = (round(value * scale) for value in face["box"])
        draw.rectangle((left, top, right, bottom), outline=FACE_BOX, width=2)
        label = str(face["face"])
        box = draw.textbbox((left, max(0, top - 2)), label, font=label_font, anchor="lb")
        draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=FACE_BOX)
        draw.text((left, max(0, top - 2)), label, fill=(0, 0, 0), font=label_font, anchor="lb")
    return picture


def face_summaries(analysis) -> str:
    """The analysis's reports as text: one report, or with several faces each face's number, score, regions and
    report."""
    if len(analysis.face_analyses) <= 1:
        return analysis.report
    paragraphs = []
    for face in analysis.face_analyses:
        regions = ", ".join(face["regions"]) or "none"
        paragraphs.append(
            f"Face {face['face']} (score {face['manipulation_score']:.2f}; regions: {regions}): {face['report']}"
        )
    return "\n".join(paragraphs)


@lru_cache(maxsize=2048)
def text_stamp(text: str, size: int, anchor: str) -> tuple[Image.Image, tuple[int, int]]:
    """`text` in `font(size)` as an "L" coverage picture and the offset of its top-left corner from the anchor point:
    rendered once, then pasted in any colour (`paste_text`). The bar chart's 42 labels and values are most of a
    figure's text, and rendering each with FreeType cost about 0.3 ms."""
    text_font = font(size)
    left, top, right, bottom = text_font.getbbox(text, anchor=anchor)
    stamp = Image.new("L", (max(1, right - left), max(1, bottom - top)))
    ImageDraw.Draw(stamp).text((-left, -top), text, fill=255, font=text_font, anchor=anchor)
    return stamp, (left, top)


def paste_text(
    canvas: Image.Image, xy: tuple[int, int], text: str, fill: tuple[int, int, int], size: int, anchor: str
) -> None:
    """What `ImageDraw.text(xy, text, fill, font(size), anchor)` draws at whole-pixel `xy`, from `text_stamp`."""
    stamp, (dx, dy) = text_stamp(text, size, anchor)
    canvas.paste(fill, (xy[0] + dx, xy[1] + dy), stamp)


def _draw_bars(canvas: Image.Image, draw: ImageDraw.ImageDraw, left: int, top: int, height: int, analysis) -> None:
    row = height / len(REGION_NAMES)
    label_size, value_size = max(10, min(15, int(row * 0.7))), max(9, min(13, int(row * 0.6)))
    label_width, value_width = 78, 44
    bar_left, bar_right = left + label_width, left + BAR_PANEL_WIDTH - value_width
    probabilities, threshold = analysis.flagging_probabilities()
    in_force = analysis.manipulated
    for index, name in enumerate(REGION_NAMES):
        probability = probabilities[name]
        y = top + index * row
        middle = round(y + row / 2)
        flagged = name in analysis.regions
        paste_text(canvas, (left, middle), name, FLAGGED if flagged else TEXT, label_size, "lm")
        draw.rectangle((bar_left, y + row * 0.2, bar_right, y + row * 0.8), fill=(235, 235, 235))
        end = bar_left + (bar_right - bar_left) * probability
        if end > bar_left:
            colour = FLAGGED if flagged else UNFLAGGED if in_force else NOT_IN_FORCE
            draw.rectangle((bar_left, y + row * 0.2, end, y + row * 0.8), fill=colour)
        paste_text(canvas, (bar_right + 6, middle), f"{probability:.2f}", TEXT, value_size, "lm")
    if in_force:
        threshold_x = bar_left + (bar_right - bar_left) * threshold
        for y in range(top, top + height, 6):
            draw.line((threshold_x, y, threshold_x, min(y + 3, top + height)), fill=MUTED, width=1)
    caption_font = font(12)  # two lines fit between the bars and the report (`draw_analysis_figure`'s layout)
    for index, line in enumerate(_wrap(BAR_CAPTIONS[in_force], BAR_PANEL_WIDTH, caption_font)[:2]):
        draw.text((left, top + height + 8 + 14 * index), line, fill=MUTED, font=caption_font)


def _draw_colour_scale(canvas: Image.Image, draw: ImageDraw.ImageDraw, left: int, top: int, width: int) -> None:
    ramp = np.repeat(heat_lut()[None, np.linspace(0, 255, width).astype(np.uint8)], 10, axis=0)
    canvas.paste(Image.fromarray(ramp, mode="RGB"), (left, top))
    small = font(12)
    draw.text((left, top + 12), "0", fill=MUTED, font=small, anchor="lt")
    draw.text((left + width // 2, top + 12), "forgery probability", fill=MUTED, font=small, anchor="mt")
    draw.text((left + width, top + 12), "1", fill=MUTED, font=small, anchor="rt")


def _wrap(text: str, width_px: int, text_font) -> list[str]:
    average = max(1.0, text_font.getlength("abcdefghijklmnopqrstuvwxyz ") / 27)
    lines = []
    for paragraph in (text or "(empty report)").splitlines() or [""]:
        lines += textwrap.wrap(paragraph, max(10, int(width_px / average))) or [""]
    return lines


def draw_analysis_figure(photo: Image.Image, analysis, title: str | None = None) -> Image.Image:
    """The figure of one analysis (module docstring).

    Args:
        photo: the RGB photo that was analysed, as displayed.
        analysis: its `ForgeryAnalysis`.
        title: the first line (default: the analysis's file name, or "photo").
    """
    panel_width, panel_height = _panel_size(*photo.size)
    panel_height = max(panel_height, 21 * 16)
    width = MARGIN * 3 + max(panel_width, 200) + BAR_PANEL_WIDTH
    title_font, body_font = font(16), font(15)
    heading = title or analysis.image or "photo"
    summary = (
        f"manipulation score {analysis.manipulation_score:.2f} ({verdict(analysis.manipulated, analysis.model)}) · mask {100 * analysis.mask_area_fraction:.1f}% "
        "of the photo"
    )
    if analysis.mask_confidence is not None:  # the released DFF mask path has no IoU head
        summary += f" · mask confidence {analysis.mask_confidence:.2f}"
    report_lines = _wrap(face_summaries(analysis), width - 2 * MARGIN, body_font)
    summary_lines = _wrap(summary, width - 2 * MARGIN, font(13))  # the bundled model's verdict is long
    line_height = 20
    top = MARGIN + (1 + len(summary_lines)) * line_height + 6
    scale_top = top + panel_height + 8
    report_top = scale_top + 36
    height = report_top + line_height * (len(report_lines) + 1) + MARGIN
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, MARGIN), _clip(heading, width - 2 * MARGIN, title_font), fill=TEXT, font=title_font)
    for index, line in enumerate(summary_lines):
        draw.text((MARGIN, MARGIN + line_height * (index + 1)), line, fill=MUTED, font=font(13))
    photo_size = _panel_size(*photo.size)
    panel = heatmap_overlay(photo, analysis.mask_probabilities, analysis.mask, photo_size)
    canvas.paste(draw_face_boxes(panel, analysis.face_analyses, photo_size[0] / photo.width), (MARGIN, top))
    _draw_colour_scale(canvas, draw, MARGIN, scale_top, photo_size[0])
    _draw_bars(canvas, draw, MARGIN * 2 + max(panel_width, 200), top, panel_height, analysis)
    draw.text((MARGIN, report_top), "Report", fill=TEXT, font=title_font)
    for index, line in enumerate(report_lines):
        draw.text((MARGIN, report_top + line_height * (index + 1)), line, fill=TEXT, font=body_font)
    return canvas


def _clip(text: str, width_px: int, text_font) -> str:
    if text_font.getlength(text) <= width_px:
        return text
    while text and text_font.getlength("…" + text) > width_px:
        text = text[1:]
    return "…" + text


__all__ = ["PHOTO_SIDE", "draw_analysis_figure", "draw_face_boxes", "face_summaries", "heatmap_overlay"]
