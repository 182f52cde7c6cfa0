"""Times `generate` of ForgeryTalker against plain InstructBLIP on the same backbone and inputs; prints JSON.

Both runs use the very same InstructBLIP weights, images, instruction and number of new tokens (EOS is
suppressed by `min_new_tokens`), interleaved in one process, so the ratio isolates what the prompter and
the mask decoder add. Target: ForgeryTalker ≤ 1.15× InstructBLIP.

    python benchmarks/bench_generate.py --preset small --repeats 5
    python benchmarks/bench_generate.py --preset paper-proportions --repeats 5

Presets: `small` keeps the real model's layout (the language model dominating) with a prompter about 13% of the
vision encoder's parameters; `paper-proportions` is `small` with the prompter (patch 14: 256 tokens, as
Face-ViT-H/14) and the mask decoder resized to the released model's shares of its vision encoder (prompter ≈ 0.63
of it, as the paper's FPN ViT against EVA-ViT-g; mask decoder ≈ 0.14). The prompter keeps `small`'s grid
convolution branch: at this width the released model's per-pixel branch would cost more time than its share of
parameters (0.16 s against 0.11 s for the vision encoder at batch 2), which the released model's does not. The JSON
gives every part's parameter count and its ratio to the vision encoder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from PIL import Image

from _machine import load_average, machine_state
from forgerytalker.tiny import build_tiny_model_and_processor

# Proportions loosely like the real model (the language model dominates), scaled to run on a CPU.
PRESETS = {
    "tiny": dict(image_size=32, hidden_size=32),
    "small": dict(image_size=224, hidden_size=256),
    "paper-proportions": dict(image_size=224, hidden_size=256),
}
# The released model's parameters per part over its vision encoder's (benchmarks/bench_released_memory.py:
# EVA-ViT-g 985,952,256; Face-ViT-H with the pixel branch 671,840,021; DFF mask path 136,766,166; Flan-T5-XL
# 2,849,757,184). The paper's FPN ViT against EVA-ViT-g gives 0.63 for the prompter, the preset's aim.
RELEASED_RATIOS_TO_VISION = {"prompter": 0.681, "mask_decoder": 0.139, "language_model": 2.89}
PAPER_PROMPTER_RATIO = 0.63


def build(preset: str):
    """The tiny model, or a "small" one whose parts keep the real model's proportions (patch-14 vision encoder
    over 256 tokens, a language model several times wider, a prompter and decoder much smaller than both)."""
    settings = PRESETS[preset]
    model, processor = build_tiny_model_and_processor("llama", num_query_tokens=32, **settings)
    if preset in ("small", "paper-proportions"):
        hidden = settings["hidden_size"]
        config = model.config.to_dict()
        config["instructblip_config"]["vision_config"].update(num_hidden_layers=8, patch_size=14, intermediate_size=4 * hidden)
        config["instructblip_config"]["text_config"].update(
            hidden_size=2 * hidden, intermediate_size=8 * hidden, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8
        )
        config["prompter_config"].update(hidden_size=96, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, patch_size=16)
        config["mask_decoder_config"].update(hidden_size=64, mlp_dim=256, num_attention_heads=4, iou_head_hidden_dim=64)
        if preset == "paper-proportions":  # about 4.1 M prompter parameters over 6.54 M of the vision encoder: 0.63
            config["prompter_config"].update(
                hidden_size=174, intermediate_size=696, num_hidden_layers=8, num_attention_heads=6, patch_size=14,
                layer_norm_eps=1e-6,
            )
            config["mask_decoder_config"].update(hidden_size=128, mlp_dim=1024, num_attention_heads=4, iou_head_hidden_dim=128)
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
    parser.add_argument(
        "--num-beams", type=int, default=1,
        help="beams of both runs (default 1, greedy; the checkpoint defaults, GENERATION_DEFAULTS, say 5)",
    )
    parser.add_argument("--num-threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    load_before = load_average()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)

    model, processor = build(args.preset)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(args.batch_size)]
    inputs = processor(images=images, regions=[["eye", "lip"]] * args.batch_size)
    # explicit, so that neither run falls back on its own generation config (ForgeryTalker's says 5 beams and a
    # repetition penalty, the bare InstructBLIP's greedy search)
    generation = dict(
        max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, num_beams=args.num_beams,
        repetition_penalty=1.0,
    )
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
    counts = {
        "vision_encoder": parameters(model.instructblip.vision_model),
        "qformer": parameters(model.instructblip.qformer),
        "language_model": parameters(model.instructblip.language_model),
        "prompter": parameters(model.prompter),
        "mask_decoder": parameters(model.mask_decoder),
    }
    print(json.dumps({
        "benchmark": "generate: ForgeryTalker vs InstructBLIP (same backbone weights and inputs)",
        "preset": args.preset,
        "batch_size": args.batch_size,
        "new_tokens": args.new_tokens,
        "num_beams": args.num_beams,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "parameters": {"instructblip": parameters(model.instructblip), **counts},
        "ratio_to_vision_encoder": {
            name: round(count / counts["vision_encoder"], 3) for name, count in counts.items() if name != "vision_encoder"
        },
        "prompter_over_vision_encoder": round(counts["prompter"] / counts["vision_encoder"], 3),
        "released_model_ratio_to_vision_encoder": RELEASED_RATIOS_TO_VISION,
        "paper_prompter_over_vision_encoder": PAPER_PROMPTER_RATIO,
        "forgerytalker_seconds_median": round(ours_median, 4),
        "instructblip_seconds_median": round(theirs_median, 4),
        "ratio": round(ours_median / theirs_median, 3),
        "target_ratio": 1.15,
        "meets_target": ours_median / theirs_median <= 1.15,
        "forgerytalker_seconds": [round(value, 4) for value in ours],
        "instructblip_seconds": [round(value, 4) for value in theirs],
        "machine": machine_state(load_before),
    }, indent=2))


if __name__ == "__main__":
    main()
