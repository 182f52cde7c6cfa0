"""Which regions a model flags: the one owner of the rule, used by `generate`, the instruction and post-processing.

A face is called manipulated when its highest region probability (the prompter's region head, read from the
class token) is above the region threshold. Which regions are then flagged:

- a prompter without a region map: every region whose probability is above the region threshold;
- a prompter with a region map (`ForgeryTalkerPrompterConfig.has_region_map`): the regions whose *located*
  probability (where the patch head sees the edit) is above the located-region threshold, and always the most
  probable one. The region head detects an edit well but hardly says where it is (on the bundled model's
  validation faces its per-region AUC among forged faces was 0.45–0.83, the region map's 0.60–0.92).

An untouched face flags nothing either way. (An instruction capped at `max_instruction_regions` keeps the most
probable flagged regions: by located probability with a region map.)
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


__all__ = ["flag_regions"]
