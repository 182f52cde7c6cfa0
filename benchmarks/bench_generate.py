"""Times `generate` of ForgeryTalker against plain InstructBLIP on the same backbone and inputs; prints JSON.

Both runs use the very same InstructBLIP weights, images, instruction and number of new tokens (EOS is
suppressed by `min_new_tokens`), interleaved in one process, so the ratio isolates what the prompter and
the mask decoder add. Target: ForgeryTalker ≤ 1.15× InstructBLIP.

    python benchmarks/bench_generate.py --preset small --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from PIL import Image

from forgerytalker.tiny import build_tiny_model_and_processor

# Proportions loosely like the real model (the language model dominates), scaled to run on a CPU.
PRESETS = {
    "tiny": dict(image_size=32, hidden_size=32),
    "small": dict(image_size=224, hidden_size=256),
}


def build(preset: str):
    """The tiny model, or a "small" one whose parts keep the real model's proportions (patch-14 vision encoder
    over 256 tokens, a language model several times wider, a prompter and decoder much smaller than both)."""
    settings = PRESETS[preset]
    model, processor = build_tiny_model_and_processor("llama", num_query_tokens=32, **settings)
    if preset == "small":
        hidden = settings["hidden_size"]
        config = model.config.to_dict()
        config["instructblip_config"]["vision_config"].update(num_hidden_layers=8, patch_size=14, intermediate_size=4 * hidden)
        config["instructblip_config"]["text_config"].update(
            hidden_size=2 * hidden, intermediate_size=8 * hidden, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8
        )
        config["prompter_config"].update(hidden_size=96, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, patch_size=16)
        config["mask_decoder_config"].update(hidden_size=64, mlp_dim=256, num_attention_heads=4, iou_head_hidden_dim=64)
        torch.manual_seed(0)
        model = type(model)(type(model.config).from_dict(config))
    return model.eval(), processor


def timed(function, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    model, processor = build(args.preset)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(args.batch_size)]
    inputs = processor(images=images, regions=[["eye", "lip"]] * args.batch_size)
    generation = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    language_inputs = model.build_language_inputs(
        inputs["instruction_input_ids"], inputs["instruction_qformer_input_ids"], inputs["instruction_regions"],
        for_generation=True,
    )

    def forgerytalker():
        model.generate(**inputs, **generation)

    def instructblip():
        model.instructblip.generate(pixel_values=inputs["pixel_values"], **language_inputs, **generation)

    with torch.inference_mode():
        forgerytalker(), instructblip()  # warm-up
        ours, theirs = [], []
        for _ in range(args.repeats):  # interleaved so both see the same machine load
            ours += timed(forgerytalker, 1)
            theirs += timed(instructblip, 1)

    def parameters(module) -> int:
        return sum(p.numel() for p in module.parameters())

    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    print(json.dumps({
        "benchmark": "generate: ForgeryTalker vs InstructBLIP (same backbone weights and inputs)",
        "preset": args.preset,
        "batch_size": args.batch_size,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "parameters": {
            "instructblip": parameters(model.instructblip),
            "prompter": parameters(model.prompter),
            "mask_decoder": parameters(model.mask_decoder),
        },
        "forgerytalker_seconds_median": round(ours_median, 4),
        "instructblip_seconds_median": round(theirs_median, 4),
        "ratio": round(ours_median / theirs_median, 3),
        "target_ratio": 1.15,
        "meets_target": ours_median / theirs_median <= 1.15,
    }, indent=2))


if __name__ == "__main__":
    main()
