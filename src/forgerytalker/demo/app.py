"""The Gradio web demo: upload a face, see the heatmap, the region bars and the report.

    from forgerytalker.demo import build_demo
    build_demo(pipe).launch()                      # pipe: forgerytalker.analysis.load_analyzer(model)

The page's one endpoint, `/analyze`, takes a picture file and optional region names, and answers the heatmap
overlay (a PNG), the 21 region probabilities, the report and the JSON record; `gradio_client` can call it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..analysis.defaults import DEMONSTRATION_NOTE, is_bundled_model
from ..analysis.face_crops import FaceOptions
from ..analysis.overlay import draw_face_boxes, face_summaries, heatmap_overlay
from ..analysis.records import ForgeryAnalysis
from ..analysis.runner import PhotoReader, model_name
from ..image_utils import ImageReadError
from ..regions import REGION_NAMES
from .examples import write_example_faces

REGION_PANEL_TITLE = "Region probabilities (regions are named only for a face called manipulated: see the report)"
"""Gradio's `Label` shows its most probable region in large type, and a region map's located probabilities (where
an edit would most likely be *if* the face is manipulated) can be high on an untouched face. The panel's title
is fixed: changing it per answer would change the `/analyze` endpoint's output for `gradio_client` callers."""
UPLOAD_CACHE_SECONDS = 3600
"""How long Gradio keeps an uploaded photo, and how often it clears older ones."""
TITLE = "ForgeryTalker: where was this face edited, and how?"
DESCRIPTION = """Upload a face photo. The model answers with a **heatmap** of the forgery probability of every pixel
(the white outline is the binary mask), the probability of each of the 21 facial **regions**, and a written
**report**. To correct the model, tick the regions you want the report to describe: the report is then written
for those regions instead of the ones the model found."""


def analyse_upload(pipe, uploads, upload, regions: list[str] | None):
    """One request: (heatmap overlay PIL image with the faces numbered, {region: probability}, report (each face's
    under its number), record).

    Args:
        uploads: the `uploads.UploadedPhotos` that reads it (through the project's reader, then deletes the upload).
        upload: an `uploads.Upload`, or the path of one of the app's own photos.
    """
    import gradio as gr

    if not upload:
        raise gr.Error("Upload a face photo first.")
    try:
        photo = uploads.read(upload)
    except ImageReadError as error:
        raise gr.Error(str(error)) from None
    photo.found.regions = list(regions) if regions else None
    result = pipe(photo.found)
    analysis = ForgeryAnalysis.from_pipeline_result(result, image=photo.name, warnings=photo.notes, model=model_name(pipe))
    if analysis is None:
        raise gr.Error(photo.found.skipped)
    scale = min(1.0, 768 / max(photo.image.size))
    size = (max(1, round(photo.image.width * scale)), max(1, round(photo.image.height * scale)))
    overlay = heatmap_overlay(photo.image, analysis.mask_probabilities, analysis.mask, size)
    overlay = draw_face_boxes(overlay, analysis.face_analyses, size[0] / photo.image.width)
    return overlay, analysis.flagging_probabilities()[0], face_summaries(analysis), analysis.to_record()


def build_demo(pipe, examples_dir: str | Path | None = None, faces: FaceOptions | None = None,
               analyse_example_on_load: bool = True, example_photos: list[str | Path] | None = None):
    """The Gradio `Blocks` app around a `forgery-analysis` pipeline.

    Args:
        pipe: the pipeline (loaded once, shared by every request).
        examples_dir: where the drawn example faces are written (default: a temporary folder).
        example_photos: photos to offer as examples instead of the drawn faces (the first is analysed on load).
        faces: which faces of each upload are analysed (default: every face, a photo without one analysed whole).
        analyse_example_on_load: open the page with an example face analysed (computed once, when the app is built).
    """
    import gradio as gr

    from .uploads import UploadedPhotos, photo_input

    uploads = UploadedPhotos(PhotoReader(faces))
    if example_photos:
        examples = [Path(photo) for photo in example_photos]
    else:
        examples = write_example_faces(examples_dir or Path(tempfile.gettempdir()) / "forgerytalker-demo-examples")

    def analyse(upload, regions):
        return analyse_upload(pipe, uploads, upload, regions)

    shown = (examples[0] if example_photos else examples[1]) if analyse_example_on_load else None
    initial = analyse(str(shown), []) if shown is not None else (None, None, None, None)

    # uploads are cached by Gradio; those older than an hour are removed every hour, so a long-running demo does
    # not keep every photo it was sent
    with gr.Blocks(title="ForgeryTalker", delete_cache=(UPLOAD_CACHE_SECONDS, UPLOAD_CACHE_SECONDS)) as demo:
        note = f"\n\n**The answers come from {DEMONSTRATION_NOTE}.**" if is_bundled_model(model_name(pipe)) else ""
        gr.Markdown(f"# {TITLE}\n\n{DESCRIPTION}{note}")
        with gr.Row():
            with gr.Column(scale=1):
                image = photo_input(  # the upload's file, read by the project's reader (not decoded by Gradio)
                    value=None if shown is None else str(shown),
                    own_photos=examples,
                    image_mode=None,
                    label="Face photo",
                    sources=["upload", "clipboard"],
                )
                regions = gr.CheckboxGroup(
                    list(REGION_NAMES), label="Regions to describe (optional: correct the model)"
                )
                button = gr.Button("Analyze", variant="primary")
                examples_label = "Example photos" if example_photos else "Example faces (drawn, not real people)"
                gr.Examples([[str(path)] for path in examples], inputs=[image], label=examples_label)
            with gr.Column(scale=1):
                heatmap = gr.Image(
                    value=initial[0], type="pil", format="png", label="Forgery heatmap (white outline: mask)", interactive=False
                )
                report = gr.Textbox(value=initial[2], label="Report", lines=3, interactive=False)
                bars = gr.Label(value=initial[1], num_top_classes=len(REGION_NAMES), label=REGION_PANEL_TITLE)
                with gr.Accordion("JSON record", open=False):
                    record = gr.JSON(value=initial[3], label="Record")
        button.click(analyse, inputs=[image, regions], outputs=[heatmap, bars, report, record], api_name="analyze")
    return demo


__all__ = ["analyse_upload", "build_demo"]
