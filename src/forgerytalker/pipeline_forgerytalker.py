"""The `forgery-analysis` pipeline: face photos in; per photo a report, the flagged regions and a mask.

    from transformers import pipeline
    import forgerytalker                                   # registers the task
    analyze = pipeline("forgery-analysis", model="path/to/checkpoint")
    result = analyze("face.jpg")                           # or a PIL image, or a list of either
    result["report"], result["regions"], result["mask"]    # mask: PIL "L" image, 0/255, at the photo's size

A checkpoint written by `save_pretrained` carries this module, so `pipeline(model=path, trust_remote_code=True)`
finds the task in a process that never imported the package.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import GenerationConfig, Pipeline

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
)
"""The keys of every result, in this order (see `ForgeryAnalysisPipeline.__call__`)."""
_GENERATION_KEYS = frozenset(key for key in vars(GenerationConfig()) if not key.startswith("_"))


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

    def __call__(self, inputs, **kwargs):
        """Analyses one photo or a list of photos.

        Args:
            inputs (`str`, `os.PathLike`, `PIL.Image.Image`, a dict, or a list of them):
                Photo files (read with `image_utils.load_rgb`), pictures (made RGB with `image_utils.to_rgb`), or
                `{"image": ..., "regions": [...]}` to name one photo's regions.
            regions (`list[str]` or `list[list[str]]`, *optional*):
                Regions to name in the instruction instead of the prompter's (an analyst correcting the model):
                one list for every photo, or one list per photo.
            region_source (`str`, *optional*):
                `"predicted"`, `"none"` or `"explicit"` (see `ForgeryTalkerConfig.region_source`).
            mask_threshold (`float`, *optional*):
                Overrides the checkpoint's `config.mask_threshold`.
            batch_size (`int`, *optional*):
                Photos per `generate` call.
            generate_kwargs (`dict`, *optional*), and any generation argument (`max_new_tokens`, `num_beams`,
            `num_return_sequences`, ...):
                Override the checkpoint's `generation_config`.

        Returns:
            Per photo a dict with `RESULT_KEYS`: `report` (str), `regions` (flagged names, `REGION_NAMES` order),
            `region_probabilities` (name → probability for all 21 regions, `REGION_NAMES` order),
            `instruction_regions` (the names in the instruction, or `None` for the plain one), `mask` (PIL "L"
            image, 0/255, at the photo's size), `mask_probabilities` (float32 `(H, W)` array at the photo's
            size, for heatmaps), `mask_confidence` (the IoU head's estimate), `mask_threshold` and
            `region_threshold` (the values used). With `num_return_sequences=k > 1`, a list of `k` such dicts.
            A list of photos gives a list of results.
        """
        regions = kwargs.get("regions")
        if regions is not None and not all(isinstance(name, str) for name in regions):
            kwargs.pop("regions")
            photos = inputs if isinstance(inputs, (list, tuple)) else [inputs]
            if len(regions) != len(photos):
                raise ValueError(f"`regions` has {len(regions)} lists but {len(photos)} photos were given; give one per photo")
            paired = [_with_regions(photo, names) for photo, names in zip(photos, regions)]
            inputs = paired if isinstance(inputs, (list, tuple)) else paired[0]
        return super().__call__(inputs, **kwargs)

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
            "predicted_regions": outputs.predicted_regions,
            "instruction_regions": outputs.instruction_regions,
            "mask_threshold": torch.full((batch_size,), outputs.mask_threshold, dtype=torch.float64),
            "region_threshold": torch.full((batch_size,), outputs.region_threshold, dtype=torch.float64),
            "target_size": target_size,
        }

    def postprocess(self, model_outputs: dict, mask_threshold: float | None = None):
        outputs = ForgeryTalkerGenerationOutput(
            sequences=model_outputs["sequences"][0],
            pred_masks=model_outputs["pred_masks"],
            iou_scores=model_outputs["iou_scores"],
            region_logits=model_outputs["region_logits"],
            region_probs=model_outputs["region_probs"],
            predicted_regions=model_outputs["predicted_regions"],
            instruction_regions=model_outputs["instruction_regions"],
            mask_threshold=float(model_outputs["mask_threshold"][0]),
            region_threshold=float(model_outputs["region_threshold"][0]),
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
