"""The `forgery-analysis` pipeline: face photos in; per photo a report, the flagged regions and a mask.

    from transformers import pipeline
    import forgerytalker                                   # registers the task
    analyze = pipeline("forgery-analysis", model="path/to/checkpoint")
    result = analyze("face.jpg")                           # or a PIL image, or a list of either
    result["report"], result["regions"], result["mask"]    # mask: PIL "L" image, 0/255, at the photo's size
    result["faces"]                                        # one answer per face (`faces="every"`, the default)

Each face is found, aligned as the training faces were, analysed (all faces of a batch at once) and its mask
mapped back onto the photo (`forgerytalker.analysis.face_crops`); `faces="whole"` reads the whole picture.

A checkpoint written by `save_pretrained` carries this module, so `pipeline(model=path, trust_remote_code=True)`
finds the task in a process that never imported the package.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from transformers import GenerationConfig, Pipeline

from .generation_forgerytalker import ONCE_WORDS_SETTING
from .image_utils import load_rgb, to_rgb
from .modeling_forgerytalker import ForgeryTalkerGenerationOutput

RESULT_KEYS = (
    "report",
    "regions",
    "region_probabilities",
    "instruction_regions",
    "mask",
    "mask_probabilities",
    "mask_confidence",
    "mask_threshold",
    "region_threshold",
    "located_region_probabilities",
    "located_region_threshold",
)
"""The keys of every result, in this order (see `ForgeryAnalysisPipeline.__call__`)."""
_GENERATION_KEYS = frozenset(key for key in vars(GenerationConfig()) if not key.startswith("_")) | {"penalize_instruction", ONCE_WORDS_SETTING}
"""What a call may pass on to `generate`: transformers' generation settings and ForgeryTalker's own."""


class ForgeryAnalysisPipeline(Pipeline):
    """Analyses face photos with a [`ForgeryTalkerForConditionalGeneration`] and its processor.

    Generation follows the checkpoint's `generation_config` (the authors' defaults: 5 beams, 5 to 100 new
    tokens, repetition penalty 1.5) unless the call overrides it. Batched calls (`batch_size=N`) give the same
    answers as one call per photo.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _pipeline_calls_generate = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError("The forgery-analysis pipeline needs the checkpoint's ForgeryTalkerProcessor (`processor=`)")
        self._face_finder = None

    def __call__(self, inputs, faces: str | None = None, min_face_size: int | None = None, no_face: str | None = None, **kwargs):
        """Analyses one photo or a list of photos.

        Args:
            inputs (`str`, `os.PathLike`, `PIL.Image.Image`, a dict, or a list of them):
                Photo files (read with `image_utils.load_rgb`), pictures (made RGB with `image_utils.to_rgb`), or
                `{"image": ..., "regions": [...]}` to name one photo's regions.
            faces (`str`, *optional*, defaults to `"every"`):
                `"every"`: each face is found, aligned as the training data was, analysed, and its mask mapped back
                onto the photo; `"largest"`: only the largest face; `"whole"`: the whole picture (face crops).
            min_face_size (`int`, *optional*, defaults to 32):
                Faces whose detector box is narrower than this many pixels are left out.
            no_face (`str`, *optional*, defaults to `"whole"`):
                A photo without a usable face is analysed `"whole"` (with a warning) or `"skip"`ped.
            regions (`list[str]` or `list[list[str]]`, *optional*):
                Regions to name in the instruction instead of the prompter's (an analyst correcting the model):
                one list for every photo, or one list per photo.
            region_source (`str`, *optional*):
                `"predicted"`, `"none"` or `"explicit"` (see `ForgeryTalkerConfig.region_source`).
            mask_threshold (`float`, *optional*):
                Overrides the checkpoint's `config.mask_threshold`.
            batch_size (`int`, *optional*):
                Model inputs (faces, or whole photos) per `generate` call.
            generate_kwargs (`dict`, *optional*), and any generation argument (`max_new_tokens`, `num_beams`,
            `num_return_sequences`, ...):
                Override the checkpoint's `generation_config`.

        Returns:
            Per photo a dict with `RESULT_KEYS`: `report` (str), `regions` (flagged names, `REGION_NAMES` order),
            `region_probabilities` (name → probability for all 21 regions, `REGION_NAMES` order),
            `instruction_regions` (the names in the instruction, or `None` for the plain one), `mask` (PIL "L"
            image, 0/255, at the photo's size), `mask_probabilities` (float32 `(H, W)` array at the photo's
            size, for heatmaps), `mask_confidence` (the IoU head's estimate), `mask_threshold` and
            `region_threshold` (the values used), `located_region_probabilities` and `located_region_threshold` (a
            model with a region map: what decided which regions are flagged; `None` otherwise), and `faces` (one dict per analysed face: number, box,
            detection score, manipulation score, report, regions and their probabilities, mask confidence, the
            photo → crop transform), `face_count`, `face_mode` and `warnings` (`analysis.face_crops.merge_faces`).
            With several faces, the photo's mask is their union, its region probabilities the highest over the
            faces and its report each face's in turn. A skipped photo's result has `skipped` (the reason) instead
            of an analysis. With `num_return_sequences=k > 1` (whole pictures only), a list of `k` dicts of
            `RESULT_KEYS`. A list of photos gives a list of results.
        """
        regions = kwargs.get("regions")
        if regions is not None and not all(isinstance(name, str) for name in regions):
            kwargs.pop("regions")
            photos = inputs if isinstance(inputs, (list, tuple)) else [inputs]
            if len(regions) != len(photos):
                raise ValueError(f"`regions` has {len(regions)} lists but {len(photos)} photos were given; give one per photo")
            paired = [_with_regions(photo, names) for photo, names in zip(photos, regions)]
            inputs = paired if isinstance(inputs, (list, tuple)) else paired[0]
        # imported by name so that a checkpoint's copy of this module (trust_remote_code) does not carry it
        face_crops = importlib.import_module("forgerytalker.analysis.face_crops")
        options = face_crops.FaceOptions.from_arguments(faces, min_face_size, no_face)
        if {**kwargs, **(kwargs.get("generate_kwargs") or {})}.get("num_return_sequences", 1) != 1:
            if options.faces != "whole":
                raise ValueError("`num_return_sequences` > 1 needs `faces=\"whole\"`: one answer per face is merged per photo")
            return super().__call__(inputs, **kwargs)
        if self._face_finder is None:
            self._face_finder = face_crops.shared_finder()
        single = not isinstance(inputs, (list, tuple, Iterator))
        results = self._analyse_faces([inputs] if single else inputs, options, face_crops, kwargs)
        if single:
            return next(results)
        return results if isinstance(inputs, Iterator) else list(results)

    def _analyse_faces(self, inputs, options, face_crops, kwargs: dict) -> Iterator[dict]:
        """Per photo: its faces found and aligned, all crops of a batch read at once, the answers merged."""

        def found_photos():
            for photo in inputs:
                if not isinstance(photo, face_crops.FacePhoto):
                    regions = kwargs.get("regions")
                    if isinstance(photo, dict):
                        photo, regions = photo["image"], photo.get("regions", regions)
                    image = load_rgb(photo) if isinstance(photo, (str, os.PathLike)) else to_rgb(photo)
                    photo = self._face_finder(image, options, regions)
                yield photo, photo.model_inputs()

        run = functools.partial(super().__call__, **kwargs)
        for photo, answers in face_crops.answers_per_photo(found_photos(), run):
            yield face_crops.merge_faces(photo, answers)

    def _sanitize_parameters(
        self,
        regions: Sequence[str] | None = None,
        region_source: str | None = None,
        mask_threshold: float | None = None,
        generate_kwargs: dict | None = None,
        **kwargs,
    ):
        unknown = sorted(set(kwargs) - _GENERATION_KEYS)
        if unknown:
            raise TypeError(f"forgery-analysis pipeline: unknown argument(s) {', '.join(unknown)}")
        # only what this call sets, so that it does not undo what the pipeline was created with
        preprocess_params = {} if regions is None else {"regions": list(regions)}
        forward_params = {} if region_source is None else {"region_source": region_source}
        generate = {**(generate_kwargs or {}), **kwargs}
        if generate:
            forward_params["generate_kwargs"] = generate
        postprocess_params = {} if mask_threshold is None else {"mask_threshold": float(mask_threshold)}
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, photo, regions: list[str] | None = None) -> dict:
        if isinstance(photo, dict):
            regions = photo.get("regions", regions)
            photo = photo["image"]
        image = load_rgb(photo) if isinstance(photo, (str, os.PathLike)) else to_rgb(photo)
        inputs = dict(self.processor(images=[image], regions=None if regions is None else [list(regions)]))
        inputs["target_size"] = torch.tensor([[image.height, image.width]])
        return inputs

    def _forward(self, model_inputs: dict, region_source: str | None = None, generate_kwargs: dict | None = None) -> dict:
        target_size = model_inputs.pop("target_size")
        model_inputs["pixel_values"] = model_inputs["pixel_values"].to(self.dtype)
        outputs = self.model.generate(
            **model_inputs, region_source=region_source, **self._prepare_generate_kwargs(generate_kwargs or {})
        )
        batch_size = len(outputs.pred_masks)
        # batch-first everywhere, so that the pipeline can split a batch back into photos
        return {
            "sequences": outputs.sequences.reshape(batch_size, -1, outputs.sequences.shape[-1]),
            "pred_masks": outputs.pred_masks,
            "iou_scores": outputs.iou_scores,
            "region_logits": outputs.region_logits,
            "region_probs": outputs.region_probs,
            "located_region_probs": outputs.located_region_probs,
            "predicted_regions": outputs.predicted_regions,
            "instruction_regions": outputs.instruction_regions,
            "mask_threshold": torch.full((batch_size,), outputs.mask_threshold, dtype=torch.float64),
            "region_threshold": torch.full((batch_size,), outputs.region_threshold, dtype=torch.float64),
            "located_region_threshold": torch.full((batch_size,), outputs.located_region_threshold, dtype=torch.float64),
            "target_size": target_size,
        }

    def postprocess(self, model_outputs: dict, mask_threshold: float | None = None):
        outputs = ForgeryTalkerGenerationOutput(
            sequences=model_outputs["sequences"][0],
            pred_masks=model_outputs["pred_masks"],
            iou_scores=model_outputs["iou_scores"],
            region_logits=model_outputs["region_logits"],
            region_probs=model_outputs["region_probs"],
            located_region_probs=model_outputs["located_region_probs"],
            predicted_regions=model_outputs["predicted_regions"],
            instruction_regions=model_outputs["instruction_regions"],
            mask_threshold=float(model_outputs["mask_threshold"][0]),
            region_threshold=float(model_outputs["region_threshold"][0]),
            located_region_threshold=float(model_outputs["located_region_threshold"][0]),
        )
        height, width = (int(value) for value in model_outputs["target_size"][0])
        results = self.processor.post_process_generation(
            outputs, target_sizes=[(height, width)], mask_threshold=mask_threshold, return_mask_probabilities=True
        )
        answers = [_answer(result) for result in results]
        return answers[0] if len(answers) == 1 else answers


def _with_regions(photo, regions: Sequence[str]) -> dict:
    if isinstance(photo, dict):
        return {**photo, "regions": list(regions)}
    return {"image": photo, "regions": list(regions)}


def _answer(result: dict) -> dict:
    """One result of `post_process_generation` in the pipeline's schema (`RESULT_KEYS`)."""
    mask = result["mask"].cpu().numpy()
    answer = {
        **{key: result[key] for key in RESULT_KEYS if key in result},
        "mask": Image.fromarray(mask.astype(np.uint8) * 255),  # 2-D uint8: mode "L"
        "mask_probabilities": result["mask_probabilities"].cpu().numpy().astype(np.float32),
    }
    return {key: answer[key] for key in RESULT_KEYS}


__all__ = ["RESULT_KEYS", "ForgeryAnalysisPipeline"]
