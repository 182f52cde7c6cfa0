"""`forgerytalker evaluate`: score a model on a dataset split (paper Tables 2 and 3, per method, robustness)."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from ..instruction import DATASET_REGION_SOURCES
from ._threads import torch_threads
from .arguments import fail, positive_int

HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
"""What `from_pretrained` / `load_dataset` would read as a hub id (`name` or `owner/name`)."""


class UsageError(Exception):
    """A command-line argument that cannot be used; the message starts with the argument's name."""


DEFAULT_MAX_NEW_TOKENS = 60


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on a dataset split: reports, masks, regions, detection, robustness",
        description=(
            "Generates a report, a mask and region probabilities for every image of a split and writes into OUT: "
            "predictions.jsonl, masks/<image_id>.png, metrics.json and metrics.md (laid out like the paper's "
            "Table 2, with per-method, per-region and robustness tables). The outputs appear when the run is "
            "complete; re-running an interrupted command resumes it. Under `accelerate launch` every process "
            "evaluates a shard. See docs/evaluation.md."
        ),
    )
    parser.add_argument("--model", required=True, help="model folder (save_pretrained output) or hub id")
    parser.add_argument("--data", required=True, help="dataset folder or hub id that datasets.load_dataset reads")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument(
        "--out", required=True, help="output folder (an earlier run's outputs are replaced only with --overwrite)"
    )
    parser.add_argument(
        "--regions",
        choices=DATASET_REGION_SOURCES,
        default="predicted",
        help="instruction regions: the prompter's (default), the ground truth's (FPN-GT oracle) or none (w/o FPN); "
        "the three rows of the paper's Table 3",
    )
    parser.add_argument(
        "--degrade",
        action="append",
        default=[],
        metavar="SPEC",
        help="also evaluate on degraded images and report the drop per metric; repeatable: jpeg:QUALITY, "
        "resize:FACTOR, blur:SIGMA, or several joined with + (applied in order)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per generate call (default 8)")
    parser.add_argument(
        "--max-new-tokens",
        type=positive_int,
        help="longest report (default 60; with --protocol official the checkpoint's generation_config.max_new_tokens, "
        "the release's 100)",
    )
    parser.add_argument(
        "--protocol",
        choices=("forgerytalker", "official"),
        default="forgerytalker",
        help="metric conventions: this package's (default), or the authors' released evaluation where it differs "
        "(masks thresholded at the model's resolution, then resized with PIL's nearest neighbour; ground truth "
        "grey > 127), to compare with their README's numbers",
    )
    parser.add_argument(
        "--meteor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compute METEOR (default: on; a Java process of about 5 s per table row, so --no-meteor for quick runs)",
    )
    parser.add_argument(
        "--detection-score",
        choices=("region", "mask_area"),
        default="region",
        help="authentic-vs-forged score: highest region probability (default) or forged fraction of the mask",
    )
    parser.add_argument("--limit", type=positive_int, help="evaluate only the first N samples (quick checks)")
    parser.add_argument(
        "--device",
        help="torch device (default: each process's own GPU when available, else cpu); checked before loading",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="dtype the model is loaded and run in (default float32; bfloat16 halves the memory, as `analyze --dtype`)",
    )
    parser.add_argument(
        "--num-threads",
        type=positive_int,
        help="torch's intra-op CPU threads (default: OMP_NUM_THREADS if set, else the cores idle at start); 1 avoids "
        "spin-waiting when other processes share the cores",
    )
    parser.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave out images that fail to decode (listed in metrics.json) instead of stopping",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs of an earlier run in OUT (only the files it wrote, once the new run is complete)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars, the libraries' too")
    parser.set_defaults(func=run_evaluate, fast_exit=True)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..launched_processes import launched_processes

    with torch_threads(args.num_threads), launched_processes():
        return _run_evaluate(args)


def _run_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.distributed import EvaluationProcesses
    from ..evaluation.output_folder import OutputFolderError, OutputWriteError, check_output_folder
    from ..evaluation.samples import UnreadableImageError
    from ..evaluation.text_metrics import JavaNotFoundError, require_java

    try:
        _check_arguments(args)
        processes = EvaluationProcesses()
        processes.all_succeed(require_java, "The report metrics (PTB tokenizer)")  # every process, before loading
        processes.on_main(check_output_folder, args.out, args.overwrite)
        device = _device(args.device, processes)
        dataset = _load_split(args.data, args.split, args.limit)
        model, processor = _load_model(args.model, device, args.dtype)
        document = _evaluate(args, model, processor, dataset)
    except UsageError as error:
        return fail(str(error), 2)
    except (OutputFolderError, OutputWriteError) as error:
        return fail(f"--out: {error}", 2)
    except UnreadableImageError as error:
        return fail(
            f"the image of sample {error.image_id!r} cannot be decoded: {error.reason}; pass --skip-unreadable to "
            "leave such images out (they are listed in metrics.json)",
            1,
        )
    except JavaNotFoundError as error:
        return fail(str(error), 1)
    if processes.is_main_process:
        print(_summary(document, _row_label(args)))
        print(f"\nWrote predictions.jsonl, masks/, metrics.json and metrics.md to {args.out}")
    return 0


def _device(name: str | None, processes) -> str:
    """The torch device to evaluate on: `--device`, checked; by default each process's own accelerator, or CPU."""
    import torch

    local_index = processes.state.local_process_index if processes.state is not None else 0
    if name is None:
        if processes.state is not None:
            return str(processes.state.device)
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device: not a torch device: {name!r} (e.g. cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + (" (a CPU-only build)" if torch.version.cuda is None else "")
            raise UsageError(f"--device: CUDA is not available on this machine ({build}); use --device cpu")
        if device.index is None and processes.num_processes > 1:
            device = torch.device("cuda", local_index)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device: {device} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device: MPS is not available on this machine; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device: unsupported device {name!r}; use cpu, cuda or mps")
    return str(device)


def _row_label(args: argparse.Namespace) -> str:
    protocol = ", official protocol" if args.protocol == "official" else ""
    return f"{Path(args.model).name} ({args.regions} regions{protocol})"


def _summary(document: dict, label: str) -> str:
    """The Table-2 layout of the run (with the paper's rows), detection, robustness drops and skipped images."""
    from ..evaluation.conventions import DETECTION_METRICS
    from ..evaluation.report import markdown_table, robustness_markdown, table2_markdown, thresholds_sentence

    overall = document["overall"]
    parts = [f"{overall['num_images']} images of split {document['run']['split']}", table2_markdown({label: overall})]
    parts.append(markdown_table({label: overall}, DETECTION_METRICS, "Authentic vs forged"))
    if "robustness" in document:
        drops = robustness_markdown(document["robustness"]["drop"])
        parts += ["Drop per metric on degraded inputs (clean - degraded):", drops]
    parts.append(thresholds_sentence(document["thresholds"]))
    if document["skipped_images"]:
        parts.append(f"warning: {len(document['skipped_images'])} unreadable image(s) left out; see metrics.json")
    return "\n\n".join(parts)


def _looks_like_hub_id(name: str) -> bool:
    return bool(HUB_ID.match(name)) and not name.startswith(".")


def _check_arguments(args: argparse.Namespace) -> None:
    """Fails before any loading: bad or repeated `--degrade` specs, local paths that do not exist."""
    from ..evaluation.runner import parse_degradation_specs

    try:
        parse_degradation_specs(args.degrade)
    except ValueError as error:
        raise UsageError(f"--degrade: {error}") from None
    for option, value in (("--model", args.model), ("--data", args.data)):
        if not os.path.exists(value) and not _looks_like_hub_id(value):
            raise UsageError(f"{option}: no such folder: {value}")


def _load_split(data: str, split: str, limit: int | None):
    from datasets import get_dataset_split_names, load_dataset

    from ..evaluation.samples import REQUIRED_COLUMNS

    try:
        splits = get_dataset_split_names(data)
    except Exception as error:  # datasets raises several types for a missing or unreadable dataset
        raise UsageError(f"--data: cannot read a dataset from {data!r}: {error}") from error
    if split not in splits:
        raise UsageError(f"--split: {data!r} has no split {split!r}; available splits: {', '.join(splits)}")
    dataset = load_dataset(data, split=split)
    missing = [column for column in REQUIRED_COLUMNS if column not in dataset.column_names]
    if missing:
        raise UsageError(f"--data: split {split!r} lacks the column(s) {', '.join(missing)}; see docs/evaluation.md")
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


def _load_model(name: str, device: str, dtype: str = "float32"):
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModel, AutoProcessor

    import forgerytalker  # noqa: F401  (registers the Auto classes)

    path = str(Path(name).resolve()) if os.path.exists(name) else name
    try:
        model = AutoModel.from_pretrained(path, dtype=getattr(torch, dtype))
        processor = AutoProcessor.from_pretrained(path)
    except SafetensorError as error:
        raise UsageError(
            f"--model: the weights in {name!r} are damaged or incomplete (model.safetensors: {error}); save or "
            "download the checkpoint again"
        ) from error
    except (OSError, ValueError, KeyError) as error:
        raise UsageError(f"--model: cannot load a ForgeryTalker model from {name!r}: {error}") from error
    return model.to(device), processor


def _max_new_tokens(args: argparse.Namespace, model) -> int:
    """`--max-new-tokens`, else the checkpoint's own limit under `--protocol official` (as the release generates),
    else 60."""
    if args.max_new_tokens is not None:
        return args.max_new_tokens
    configured = getattr(getattr(model, "generation_config", None), "max_new_tokens", None)
    return configured if args.protocol == "official" and configured else DEFAULT_MAX_NEW_TOKENS


def _evaluate(args: argparse.Namespace, model, processor, dataset) -> dict:
    from ..evaluation.runner import run_evaluation

    return run_evaluation(
        model,
        processor,
        dataset,
        region_source=args.regions,
        degradations=args.degrade,
        batch_size=args.batch_size,
        max_new_tokens=_max_new_tokens(args, model),
        with_meteor=args.meteor,
        output_dir=args.out,
        progress=not args.no_progress,
        detection_score=args.detection_score,
        protocol=args.protocol,
        skip_unreadable_images=args.skip_unreadable,
        overwrite=args.overwrite,
        model_name=_row_label(args),
        run_info={"model": args.model, "data": args.data, "split": args.split, "limit": args.limit},
    )
