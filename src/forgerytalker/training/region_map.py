"""Fitting a prompter's region map (`ForgeryTalkerPrompterConfig.region_map`) in stage 1.

The map is a logistic probe: a linear map from the patch head's probabilities (`grid × grid`) to the 21 regions,
scored only on manipulated faces (`region_map_loss`). It is fitted rather than trained with the prompter because
it reads *positions*: stage 1 trains on augmented faces (random crops and resizing move every region on the grid),
while the faces it names regions on are aligned. Fitted on the same prompter after 500 demo-recipe steps, the map
trained along with it (augmented faces, its own learning rate) reached a validation PLM of 44.4, the probe fitted
on 3,000 unaugmented training faces 49.3.

Stage 1 fits it on `--region_map_samples` training faces, read without augmentation, each time it validates (so
that the validation PLM, and the best checkpoint, see a fitted map) and before it saves a run without validation.
With several processes, each reads its shard and the main process's fit is given to all of them.
"""

from __future__ import annotations

import logging

import torch
from accelerate.utils import broadcast_object_list

from ..modeling_forgerytalker_prompter import region_map_loss
from .validation import run_prompter

logger = logging.getLogger(__name__)

REGION_MAP_L2 = 1e-4
"""Weight of the squared weights in the fitted objective (per-sample mean loss + this × ‖W‖²): about a
scikit-learn `LogisticRegression(C=2)` per region for 2,000 manipulated faces. On the session-23 prompter's patch
probabilities, validation PLM 49.3 at 1e-4, 48.5 at 1e-3, 40.7 at 1e-2."""
MAX_ITERATIONS = 500


def region_map_rows(train_split, count: int, seed: int):
    """The training rows the map is fitted on: `count` of them drawn with `seed` (all, when fewer)."""
    if count >= len(train_split):
        return train_split
    return train_split.shuffle(seed=seed).select(range(count))


def fit_linear_map(features: torch.Tensor, labels: torch.Tensor, l2: float = REGION_MAP_L2) -> tuple[torch.Tensor, torch.Tensor]:
    """`(weight (num_regions, cells), bias (num_regions,))` minimising `region_map_loss` + `l2` × ‖weight‖² over
    `features` `(N, cells)` and `labels` `(N, num_regions)` (L-BFGS from zero; only manipulated rows count)."""
    weight = torch.zeros(labels.shape[1], features.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(labels.shape[1], dtype=torch.float64, requires_grad=True)
    features, labels = features.double(), labels.double()
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=MAX_ITERATIONS, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def objective():
        optimizer.zero_grad()
        loss = region_map_loss(features @ weight.T + bias, labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    return weight.detach(), bias.detach()


def fit_region_map(prompter, image_processor, rows, batch_size: int, accelerator=None,
                   skip_unreadable_images: bool = False) -> int:
    """Fits `prompter.region_map` on `rows` (MMTT-layout rows: `image`, `regions`, ...) in place, on every process.

    Returns:
        The number of manipulated faces it was fitted on (0: nothing to fit on, the map is left as it was, with a
        warning).
    """
    scored = run_prompter(prompter, image_processor, rows, batch_size, accelerator, skip_unreadable_images,
                          desc="fit region map")
    features, labels = torch.from_numpy(scored.patch_probs), torch.from_numpy(scored.region_labels)
    manipulated = int(labels.bool().any(-1).sum())
    fitted = None
    if manipulated == 0:
        logger.warning("No manipulated face among the %d rows the region map is fitted on: the map is left as it was",
                       len(labels))
    elif accelerator is None or accelerator.is_main_process:
        fitted = fit_linear_map(features, labels)
    if accelerator is not None and accelerator.num_processes > 1:
        fitted = broadcast_object_list([fitted], from_process=0)[0]
    if fitted is not None:
        weight, bias = fitted
        with torch.no_grad():
            prompter.region_map.weight.copy_(weight.to(prompter.region_map.weight))
            prompter.region_map.bias.copy_(bias.to(prompter.region_map.bias))
    return manipulated


__all__ = ["REGION_MAP_L2", "fit_linear_map", "fit_region_map", "region_map_rows"]
