"""Which regions a model flags, and what it answers for a face it calls untouched: the one owner of both rules,
used by `generate`, the instruction and post-processing.

A face is called manipulated when its highest region probability (the prompter's region head, read from the
class token) is above the region threshold. Which regions are then flagged:

- a prompter without a region map: every region whose probability is above the region threshold;
- a prompter with a region map (`ForgeryTalkerPrompterConfig.has_region_map`): the regions whose *located*
  probability (where the patch head sees the edit) is above the located-region threshold, and always the most
  probable one. The region head detects an edit well but hardly says where it is (on the bundled model's
  validation faces its per-region AUC among forged faces was 0.45–0.83, the region map's 0.60–0.92).

An untouched face flags nothing either way, so a face is called manipulated exactly when it flags a region
(`called_manipulated`). (An instruction capped at `max_instruction_regions` keeps the most probable flagged regions:
by located probability with a region map.)

A model whose config sets `empty_untouched_masks` also answers an untouched face with an empty mask
(`empty_untouched_masks`): the mask decoder alone, asked about a face the prompter does not call manipulated, still
marks what it finds most suspicious.
"""

from __future__ import annotations

import torch


def flag_regions(
    region_probs: torch.Tensor,
    region_threshold: float,
    located_region_probs: torch.Tensor | None = None,
    located_region_threshold: float | None = None,
) -> torch.Tensor:
    """0/1 `(batch_size, num_regions)` long tensor of the flagged regions.

    Args:
        region_probs: `(batch_size, num_regions)`, the region head's probabilities.
        region_threshold: above it (highest region probability) a face is manipulated.
        located_region_probs: `(batch_size, num_regions)`, the region map's probabilities, or `None`.
        located_region_threshold: needed with `located_region_probs`.
    """
    if located_region_probs is None:
        return (region_probs > region_threshold).long()
    if located_region_threshold is None:
        raise ValueError("`located_region_probs` need a `located_region_threshold`")
    manipulated = region_probs.max(dim=-1, keepdim=True).values > region_threshold
    top = torch.zeros_like(located_region_probs, dtype=torch.bool).scatter_(-1, located_region_probs.argmax(-1, keepdim=True), True)
    return (manipulated & ((located_region_probs > located_region_threshold) | top)).long()


def called_manipulated(flagged: torch.Tensor) -> torch.Tensor:
    """bool `(batch_size,)`: the faces called manipulated, given their `flag_regions` `(batch_size, num_regions)`."""
    return flagged.bool().any(dim=-1)


def empty_untouched_masks(
    pred_masks: torch.Tensor, flagged: torch.Tensor, iou_scores: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(pred_masks, iou_scores)` with the answers for faces not called manipulated (no region in `flagged`,
    `(batch_size, num_regions)`) replaced: their mask logits `(batch_size, 1, height, width)` by the dtype's lowest
    value (probability 0 at every pixel, at any size they are resized to), their IoU estimates `(batch_size, 1)` by
    NaN (the decoder's estimate was for the mask it made, not for the empty one; post-processing gives `None`)."""
    untouched = ~called_manipulated(flagged).to(pred_masks.device)
    pred_masks = pred_masks.masked_fill(untouched[:, None, None, None], torch.finfo(pred_masks.dtype).min)
    if iou_scores is not None:
        iou_scores = iou_scores.masked_fill(untouched.to(iou_scores.device)[:, None], float("nan"))
    return pred_masks, iou_scores


__all__ = ["called_manipulated", "empty_untouched_masks", "flag_regions"]
