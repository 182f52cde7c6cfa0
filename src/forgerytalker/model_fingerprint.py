"""The fingerprint of a model's weights, which evaluate's and analyze's resumable outputs record.

It lives on its own, importing only torch, so that `forgerytalker analyze` does not pay for the evaluation stack
(`datasets` alone takes 0.6 s to import) to learn whether its earlier records still hold.
"""

from __future__ import annotations

import hashlib

import torch


def model_fingerprint(model) -> str:
    """A hash of the model's config, generation config, parameter names and shapes and the first values of every
    parameter: equal for the same checkpoint, different after any training step (a resumed run must not mix)."""
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode("utf-8"))
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        digest.update(generation_config.to_json_string(use_diff=False).encode("utf-8"))
    parameters = sorted(model.named_parameters())
    digest.update(repr([(name, tuple(parameter.shape)) for name, parameter in parameters]).encode("utf-8"))
    with torch.no_grad():
        heads = torch.cat([parameter.detach().reshape(-1)[:4].double().cpu() for _, parameter in parameters])
    digest.update(heads.numpy().tobytes())
    return digest.hexdigest()


__all__ = ["model_fingerprint"]
