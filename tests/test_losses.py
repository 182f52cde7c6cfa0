"""Hand-computed checks of the prompter loss (paper Eq. 3–5) and the mask loss."""

import math

import torch
import torch.nn.functional as F

from forgerytalker.modeling_forgerytalker_mask_decoder import forgery_mask_loss
from forgerytalker.modeling_forgerytalker_prompter import forgery_prompter_loss


def test_prompter_loss_matches_the_paper_by_hand():
    # p = 0.5 everywhere, labels [1, 0], ω = 0.2, Dice smoothing 1
    bce = (math.log(2) + 0.2 * math.log(2)) / 2
    dice = 1 - (2 * 0.5 + 1) / (1 + 1 + 1)
    loss = forgery_prompter_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), negative_weight=0.2, dice_smooth=1.0)
    assert math.isclose(loss.item(), 0.5 * (bce + dice), rel_tol=1e-6)


def test_prompter_loss_pushes_authentic_images_towards_no_region():
    confident_none = forgery_prompter_loss(torch.full((1, 21), -8.0), torch.zeros(1, 21), 0.2, 1.0)
    unsure = forgery_prompter_loss(torch.zeros(1, 21), torch.zeros(1, 21), 0.2, 1.0)
    assert confident_none.item() < 0.01 < unsure.item()


def test_mask_loss_applies_sigmoid_once():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    confident_logits = torch.where(target > 0, 20.0, -20.0)
    perfect = forgery_mask_loss(confident_logits, torch.ones(1, 1), target, 0.5, dice_weight=1.0, iou_weight=1.0)
    assert perfect.item() < 1e-6  # a double sigmoid would leave BCE near 0.5

    logits = torch.randn(1, 1, 4, 4)
    bce_only = forgery_mask_loss(logits, torch.ones(1, 1), target, 0.5, dice_weight=0.0, iou_weight=0.0)
    expected = F.binary_cross_entropy_with_logits(F.interpolate(logits, size=(8, 8), mode="bilinear"), target)
    assert torch.allclose(bce_only, expected)


def test_mask_loss_of_an_authentic_image_is_defined_and_rewards_an_empty_mask():
    empty = torch.zeros(1, 1, 8, 8)
    good = forgery_mask_loss(torch.full((1, 1, 8, 8), -20.0), torch.ones(1, 1), empty, 0.5, 1.0, 1.0)
    bad = forgery_mask_loss(torch.full((1, 1, 8, 8), 20.0), torch.ones(1, 1), empty, 0.5, 1.0, 1.0)
    assert torch.isfinite(good) and good.item() < 1e-6 < bad.item()
