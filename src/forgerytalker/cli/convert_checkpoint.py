"""`forgerytalker convert-checkpoint`: the authors' released weights → a ForgeryTalker checkpoint folder."""

from __future__ import annotations

import argparse
import sys

FLAGS = {
    "instructblip": "--instructblip",
    "dff_checkpoint": "--dff-checkpoint",
    "face_vit_checkpoint": "--face-vit-checkpoint",
    "output_dir": "--out",
    "dtype": "--dtype",
    "prompter_num_heads": "--prompter-heads",
    "mask_decoder_num_heads": "--mask-decoder-heads",
}
"""Parameter of `convert_released_checkpoint` → the flag that sets it, for error messages."""
USAGE_ERROR = 2


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert-checkpoint",
        help="convert the authors' released DFF + Face-ViT weights into a ForgeryTalker checkpoint",
        description=(
            "Reads the InstructBLIP base, the DFF checkpoint (LianJC/DFF-InstructBLIP-Detection) and the Face-ViT "
            "checkpoint (LianJC/Face-ViT-MultiLabel), places every key or drops it from an explicit list, and writes "
            "a safetensors checkpoint with its processor and the release's generation settings into OUT. OUT then "
            "loads with AutoModel / AutoProcessor (trust_remote_code=True without this package) and runs through "
            "the forgery-analysis pipeline and `forgerytalker evaluate`. See README, 'Running the released weights'."
        ),
    )
    parser.add_argument(
        "--instructblip",
        required=True,
        metavar="PATH_OR_ID",
        help="Salesforce/instructblip-flan-t5-xl or its downloaded folder (vision encoder, Flan-T5, tokenizers)",
    )
    parser.add_argument("--dff-checkpoint", required=True, metavar="FILE", help="2111_checkpoint_best.pth")
    parser.add_argument(
        "--face-vit-checkpoint",
        required=True,
        metavar="FILE",
        help="Fakeface-ViT-H_14-add_cnn_branch_3_5-add_max_pool-21_class-weight_1_02-bce_focal_dice_jaccard_loss_checkpoint.bin",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (appears only when complete)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="dtype of the language model's weights, and of the rest with --uniform-dtype (default float32). The "
        "vision encoder, Q-Former, projections, Face-ViT and mask path stay in float32 as the release runs them, also "
        "when the model is later loaded in bfloat16",
    )
    parser.add_argument(
        "--uniform-dtype",
        action="store_true",
        help="write every weight in --dtype and record no float32 modules (bfloat16: 9 GiB instead of 14 GiB; region "
        "probabilities near the threshold, and so the instruction and the mask, can differ from the release's)",
    )
    parser.add_argument("--prompter-heads", type=int, default=16, help="Face-ViT attention heads (default 16, ViT-H/14)")
    parser.add_argument("--mask-decoder-heads", type=int, default=8, help="mask path attention heads (default 8)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="UNSAFE: load checkpoint pickles that need more than tensors and plain containers (unpickling can run "
        "arbitrary code; only for files you trust). Without it such files are refused.",
    )
    parser.set_defaults(func=run_convert_checkpoint)


def run_convert_checkpoint(args: argparse.Namespace) -> int:
    from ..released_weights import CheckpointConversionError, convert_released_checkpoint

    try:
        report = convert_released_checkpoint(
            args.instructblip,
            args.dff_checkpoint,
            args.face_vit_checkpoint,
            args.out,
            dtype=args.dtype,
            **({"keep_in_fp32_modules": ()} if args.uniform_dtype else {}),
            prompter_num_heads=args.prompter_heads,
            mask_decoder_num_heads=args.mask_decoder_heads,
            allow_unsafe_pickle=args.allow_unsafe_pickle,
            overwrite=args.overwrite,
        )
    except CheckpointConversionError as error:
        print(f"error: {FLAGS.get(error.argument, error.argument)}: {error.message}", file=sys.stderr)
        return USAGE_ERROR
    print(report.summary())
    return 0
