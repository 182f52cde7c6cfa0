"""The heatmap panel of the analysis figure: Pillow's blending against the formula it implements."""

import numpy as np
from PIL import Image, ImageFilter

from forgerytalker.analysis.overlay import TINT_OPACITY, heat_lut, heatmap_overlay


def reference_overlay(photo: Image.Image, probabilities: np.ndarray, mask: Image.Image, size) -> np.ndarray:
    """`photo * (1 - a) + colour * a`, `a = TINT_OPACITY * p`, in float numpy; the mask's outline white."""
    base = np.asarray(photo.resize(size, Image.Resampling.BILINEAR), dtype=np.float64)
    heat = np.asarray(Image.fromarray(probabilities, mode="F").resize(size, Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0.0, 1.0)
    colours = heat_lut()[np.rint(heat * 255).astype(np.uint8)].astype(np.float64)
    alpha = (TINT_OPACITY * heat)[..., None]
    blended = base * (1 - alpha) + colours * alpha
    outline = np.asarray(mask.resize(size, Image.Resampling.NEAREST).filter(ImageFilter.FIND_EDGES)) > 0
    blended[outline] = 255
    return blended


def test_heatmap_overlay_matches_the_blending_formula():
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    rows, columns = np.mgrid[0:90, 0:120]
    probabilities = np.clip(np.exp(-((rows - 40) ** 2 + (columns - 70) ** 2) / 600.0), 0, 1).astype(np.float32)
    probabilities[0, :10] = 1.5  # out of range: clipped
    mask = Image.fromarray(((probabilities > 0.5) * 255).astype(np.uint8), mode="L")
    size = (240, 180)

    drawn = heatmap_overlay(photo, probabilities, mask, size)

    assert drawn.mode == "RGB" and drawn.size == size
    expected = reference_overlay(photo, probabilities, mask, size)
    difference = np.abs(np.asarray(drawn, dtype=np.float64) - expected)
    # the opacity is taken in 256 levels of the probability: at most about 1.5 grey levels off
    assert difference.max() <= 2.0, difference.max()
    assert difference.mean() < 0.5
    outline = np.asarray(mask.resize(size, Image.Resampling.NEAREST).filter(ImageFilter.FIND_EDGES)) > 0
    assert outline.any() and (np.asarray(drawn)[outline] == 255).all()


def test_zero_probability_leaves_the_photo_untouched():
    photo = Image.fromarray(np.full((64, 64, 3), (10, 200, 90), dtype=np.uint8))
    drawn = heatmap_overlay(photo, np.zeros((64, 64), np.float32), Image.new("L", (64, 64)), (64, 64))
    assert (np.asarray(drawn) == (10, 200, 90)).all()


def test_the_figure_numbers_each_face_and_gives_its_regions_and_report():
    from forgerytalker import REGION_NAMES
    from forgerytalker.analysis.overlay import FACE_BOX, PHOTO_SIDE, draw_analysis_figure, face_summaries
    from forgerytalker.analysis.records import ForgeryAnalysis

    photo = Image.new("RGB", (1024, 512), (100, 100, 100))
    faces = [
        {"face": 1, "box": [100, 120, 300, 320], "manipulation_score": 0.9, "regions": ["eye", "nose"], "report": "The eyes are blurred."},
        {"face": 2, "box": [600, 100, 820, 330], "manipulation_score": 0.1, "regions": [], "report": "No issue."},
    ]
    probabilities = {name: 0.1 for name in REGION_NAMES}
    analysis = ForgeryAnalysis(
        report="Face 1: The eyes are blurred.\nFace 2: No issue.", regions=["eye", "nose"], region_probabilities=probabilities,
        instruction_regions=None, mask=Image.new("L", photo.size), mask_probabilities=np.zeros((512, 1024), np.float32),
        mask_confidence=0.5, mask_area_fraction=0.0, mask_bbox=None, manipulation_score=0.9, manipulated=True,
        mask_threshold=0.5, region_threshold=0.5, width=1024, height=512, faces=2, face_mode="every", face_analyses=faces,
    )
    assert face_summaries(analysis).splitlines() == [
        "Face 1 (score 0.90; regions: eye, nose): The eyes are blurred.",
        "Face 2 (score 0.10; regions: none): No issue.",
    ]
    figure = np.asarray(draw_analysis_figure(photo, analysis, title="group.jpg"))
    scale = PHOTO_SIDE / 1024
    top = 12 + 2 * 20 + 6  # the photo panel's place in the figure (overlay.py's layout)
    for face in faces:
        left, upper, right, lower = (round(value * scale) for value in face["box"])
        box_edge = figure[top + (upper + lower) // 2, 12 + left]
        assert tuple(box_edge) == FACE_BOX
        assert tuple(figure[top + (upper + lower) // 2, 12 + (left + right) // 2]) == (100, 100, 100)  # inside: the photo


def test_the_bundled_model_s_long_verdict_stays_inside_the_figure():
    from forgerytalker import REGION_NAMES
    from forgerytalker.analysis.defaults import BUNDLED_MODEL_DIR, verdict
    from forgerytalker.analysis.overlay import MARGIN, draw_analysis_figure
    from forgerytalker.analysis.records import ForgeryAnalysis

    photo = Image.new("RGB", (640, 480), (100, 100, 100))
    analysis = ForgeryAnalysis(
        report="The eyes look pasted in.", regions=["eye"], region_probabilities={name: 0.1 for name in REGION_NAMES},
        instruction_regions=None, mask=Image.new("L", photo.size), mask_probabilities=np.zeros((480, 640), np.float32),
        mask_confidence=0.5, mask_area_fraction=0.0, mask_bbox=None, manipulation_score=0.9, manipulated=True,
        mask_threshold=0.5, region_threshold=0.5, width=640, height=480, faces=1, face_mode="whole", face_analyses=[],
        model=str(BUNDLED_MODEL_DIR),
    )
    assert "demonstration" in verdict(True, analysis.model)
    figure = np.asarray(draw_analysis_figure(photo, analysis, title="photo.jpg"))
    assert (figure[:, -MARGIN // 2 :] == 255).all()  # no text runs into the right margin


def test_pasted_text_is_what_pillow_draws():
    from PIL import ImageDraw

    from forgerytalker import REGION_NAMES
    from forgerytalker.analysis.overlay import FLAGGED, TEXT, font, paste_text

    for size in (9, 10, 13, 15):
        for text in (*REGION_NAMES, "0.00", "0.57", "1.00"):
            for colour in (TEXT, FLAGGED):
                drawn = Image.new("RGB", (120, 30), (235, 240, 250))
                pasted = drawn.copy()
                ImageDraw.Draw(drawn).text((7, 15), text, fill=colour, font=font(size), anchor="lm")
                paste_text(pasted, (7, 15), text, colour, size, "lm")
                assert np.array_equal(np.asarray(drawn), np.asarray(pasted)), (text, size, colour)
                assert (np.asarray(drawn) != (235, 240, 250)).any()
