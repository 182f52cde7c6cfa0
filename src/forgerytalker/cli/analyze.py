"""`forgerytalker analyze`: face photos in; per photo a mask, a heatmap figure and a JSON record out.

Under `accelerate launch -m forgerytalker.cli analyze ...` every process takes its share of the photos and the
first one merges `results.jsonl` when all are done. Exit codes: 0 when every photo was analysed, 1 when any
failed (its error record says why), 2 for a bad argument (the flag is named).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

from ..analysis.face_crops import DEFAULT_FACES, DEFAULT_MIN_FACE_SIZE, DEFAULT_NO_FACE, FACE_MODES, NO_FACE_MODES
from ._threads import CpuWatch, passive_waiting, torch_threads
from .arguments import positive_int, probability

DEFAULT_OUT = "forgerytalker-results"
USAGE_ERROR = 2
FAILED = 1


class UsageError(Exception):
    """A command-line argument that cannot be used; the message starts with the argument's name."""


def _region_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one region, e.g. --regions eye,nose")
    return names


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="analyse face photos: forgery mask, heatmap figure, region probabilities and a written report",
        description=(
            "Analyses each photo and writes into --out: <name>.mask.png (binary mask at the photo's resolution), "
            "<name>.overlay.png (forgery probability tinted on the photo, the 21 region probabilities as bars, the "
            "report below), <name>.json (the record) and results.jsonl (every record). A re-run skips photos whose "
            "outputs exist. Multi-process: accelerate launch -m forgerytalker.cli analyze ..."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photo files, folders (searched recursively) or quoted globs")
    parser.add_argument(
        "--model", help="ForgeryTalker checkpoint folder or hub id (default: the bundled demo model, see docs/RESULTS.md)"
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: ./{DEFAULT_OUT})")
    parser.add_argument("--json", action="store_true", help="print each record as a JSON line instead of a summary")
    parser.add_argument(
        "--regions",
        type=_region_list,
        metavar="NAME,NAME",
        help="write the report for these regions instead of the prompter's (correcting the model), e.g. eye,nose",
    )
    parser.add_argument(
        "--threshold", type=probability, metavar="P", help="mask threshold (default: the checkpoint's config)"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: a GPU when there is one)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--batch-size", type=positive_int, default=1, help="photos per generate call (default 1)")
    parser.add_argument("--max-new-tokens", type=positive_int, help="longest report (default: the checkpoint's)")
    parser.add_argument(
        "--num-threads",
        type=positive_int,
        help="torch's CPU threads per process (default: OMP_NUM_THREADS if set, else the cores idle at start); 1 avoids "
        "spin-waiting on cores shared with other work",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=positive_int,
        help="refuse pictures of more pixels than this before decoding them (default: what 1 GiB of memory "
        "analyses, about 48,000,000, or FORGERYTALKER_MAX_IMAGE_PIXELS)",
    )
    parser.add_argument(
        "--faces",
        choices=FACE_MODES,
        default=DEFAULT_FACES,
        help="every: find each face, align it as the model's training faces, analyse it and map its mask back onto "
        "the photo; largest: only the largest face; whole: the whole picture, for photos that are already face "
        f"crops (default: {DEFAULT_FACES})",
    )
    parser.add_argument(
        "--min-face-size",
        type=positive_int,
        default=DEFAULT_MIN_FACE_SIZE,
        help=f"leave out faces narrower than this many pixels (default: {DEFAULT_MIN_FACE_SIZE})",
    )
    parser.add_argument(
        "--no-face",
        choices=NO_FACE_MODES,
        default=DEFAULT_NO_FACE,
        help="a photo without a usable face is analysed whole, with a warning, or skipped (its record says why) "
        f"(default: {DEFAULT_NO_FACE})",
    )
    parser.add_argument(  # deprecated: before per-face analysis, --no-face-check read the whole picture
        "--face-check", action=argparse.BooleanOptionalAction, default=None, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--overlay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write <name>.overlay.png, the heatmap figure (default: on; off saves about 50 ms of CPU a photo)",
    )
    parser.add_argument("--overwrite", action="store_true", help="analyse photos again even if their outputs exist")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars, the libraries' too")
    # a short command, often run for one photo: ends without the interpreter's teardown (`forgerytalker.process_exit`)
    parser.set_defaults(func=run_analyze, fast_exit=True)


def run_analyze(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR


def _run(args: argparse.Namespace) -> int:
    if args.face_check is not None:
        print("warning: --face-check / --no-face-check are deprecated and will be removed: faces are analysed one "
              "by one now (--faces); --no-face-check reads the whole picture, as --faces whole", file=sys.stderr)
        if not args.face_check:
            args.faces = "whole"
    from pathlib import Path

    from ..analysis.inputs import InputPathError, collect_photos
    from ..analysis.outputs import OWNER, check_foreign_files, check_settings, is_finished
    from ..output_folder import OutputFolderError, check_writable, hold_lock

    regions = _check_regions(args.regions)
    model = _model_argument(args.model)
    out_dir = Path(args.out)
    try:
        check_writable(out_dir)  # a file, under a file, or not writable: before the model loads
    except OutputFolderError as error:
        raise UsageError(f"--out: {error}") from None
    try:
        photos = collect_photos(args.paths, exclude=out_dir)
    except InputPathError as error:
        raise UsageError(f"PATH: {error}") from None
    generate_kwargs = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    settings = {
        "model": model,
        "regions": regions,
        "mask_threshold": args.threshold,
        "generate_kwargs": generate_kwargs,
        "dtype": args.dtype,
        "faces": args.faces,
        "min_face_size": args.min_face_size,
        "no_face": args.no_face,
        "overlay": args.overlay,
    }
    from ..analysis.face_crops import FaceOptions
    from ..analysis.reader_process import PhotoReaderProcess
    from ..analysis.side_process import LONG_RUN_PHOTOS
    from ..analysis.writer_process import writer_for

    watch = CpuWatch()  # the cores left free are judged over the imports, the side processes' CPU time counted as ours
    # started before torch is imported: the photos are decoded, dlib's models set up and a writer process's imports
    # done on another core meanwhile
    faces = FaceOptions(args.faces, args.min_face_size, args.no_face)
    with PhotoReaderProcess(faces, args.max_image_pixels) as reader, writer_for(len(photos)) as writer:
        try:
            if int(os.environ.get("RANK", "0")) == 0:  # one lock for a run, however many processes it has
                out_dir.mkdir(parents=True, exist_ok=True)
                lock = hold_lock(out_dir, OWNER.command)  # noqa: F841  (held until the process exits)
            check_foreign_files(out_dir, photos)
            keep_finished = check_settings(out_dir, settings, args.overwrite, ignore=("model_weights",))
        except OutputFolderError as error:
            raise UsageError(f"--out: {error}") from None
        from ..launched_processes import launched_processes, world_size

        if world_size() <= 1:  # the first photos to analyse are read while the model loads
            todo = (photo for photo in photos if not (keep_finished and is_finished(out_dir, photo)))
            reader.prefetch([photo.path for photo in itertools.islice(todo, args.batch_size)])

        # a long run's reader and writer processes are busy all along: the model's threads must not spin on their cores
        with passive_waiting(len(photos) >= LONG_RUN_PHOTOS), torch_threads(args.num_threads, watch), \
                launched_processes() as state:
            return _analyze(state, args, out_dir, photos, settings, reader, writer)


def _analyze(state, args: argparse.Namespace, out_dir, photos, settings: dict, reader, writer) -> int:
    """Loads the model and analyses `photos` (the arguments checked by `_run`) in this process, one of the launched
    `state`'s (`None`: the only one), reading them with `reader` (a `PhotoReaderProcess`) and writing their files with
    `writer` (`writer_process.writer_for`); returns the exit code."""
    from ..analysis.outputs import check_settings, write_results, write_settings
    from ..analysis.runner import AnalysisOptions, run_analysis
    from ..model_fingerprint import model_fingerprint
    from ..output_folder import OutputFolderError

    model, regions, generate_kwargs = settings["model"], settings["regions"], settings["generate_kwargs"]
    pipe = _load_pipeline(model, _device(args.device, state), args.dtype)
    settings = {**settings, "model_weights": model_fingerprint(pipe.model)}  # a retrained model at the same path
    try:
        keep_finished = check_settings(out_dir, settings, args.overwrite)
    except OutputFolderError as error:
        raise UsageError(f"--out: {error}") from None
    from .. import __version__

    if _is_main(state):
        out_dir.mkdir(parents=True, exist_ok=True)
        write_settings(out_dir, {**settings, "forgerytalker_version": __version__})
    options = AnalysisOptions(
        regions=regions,
        mask_threshold=args.threshold,
        generate_kwargs=generate_kwargs,
        batch_size=args.batch_size,
        faces=reader.faces,
        max_image_pixels=reader.max_image_pixels,
        draw_overlay=args.overlay,
    )
    counts = {"analysed": 0, "skipped": 0, "failed": 0}

    def on_record(record: dict, skipped: bool) -> None:
        counts["failed" if record["status"] == "error" else "skipped" if skipped else "analysed"] += 1
        print(_json_line(record) if args.json else _summary_line(record, skipped), flush=True)

    records = run_analysis(
        pipe,
        photos,
        out_dir,
        options,
        redo_finished=not keep_finished,
        process_index=0 if state is None else state.process_index,
        num_processes=1 if state is None else state.num_processes,
        on_record=on_record,
        progress=not args.no_progress and _is_main(state),
        wait_for_everyone=None if state is None else state.wait_for_everyone,
        reader=reader,
        writer=writer,
    )
    if state is not None:
        state.wait_for_everyone()
    if not _is_main(state):
        return FAILED if any(record["status"] == "error" for record in records) else 0
    merged = write_results(out_dir, photos)
    analysed = sum(record["status"] == "ok" for record in merged)
    faceless = sum(record["status"] == "skipped" for record in merged)
    failed = len(photos) - analysed - faceless  # a photo whose outputs could not be written has no record: failed
    print(
        f"{analysed} of {len(photos)} photo(s) analysed ({counts['skipped']} kept from an earlier run), "
        f"{faceless} skipped for want of a face, {failed} failed; records in {out_dir / 'results.jsonl'}",
        file=sys.stderr,
    )
    return FAILED if failed else 0


def _check_regions(names: list[str] | None) -> list[str] | None:
    if names is None:
        return None
    from ..regions import validate_region_names

    try:
        return validate_region_names(names, "--regions")
    except ValueError as error:
        raise UsageError(f"--regions: {error}") from None


def _model_argument(model: str | None) -> str:
    from ..analysis.api import model_location
    from ..analysis.defaults import NoDefaultModelError, resolve_model

    try:
        model = resolve_model(model)
    except NoDefaultModelError as error:
        raise UsageError(f"--model: {error}") from None
    if not os.path.exists(model) and (model.startswith((".", "/", "~")) or model.count("/") > 1):
        raise UsageError(f"--model: no such folder: {model}")
    return model_location(model)


def _load_pipeline(model: str, device: str, dtype: str):
    from ..analysis.api import load_analyzer

    try:
        return load_analyzer(model, device=device, dtype=dtype)
    except (OSError, ValueError) as error:
        raise UsageError(f"--model: cannot load a ForgeryTalker model from {model!r}: {error}") from error


def _device(device: str, state) -> str:
    """`--device`, checked; `auto` under several processes is each process's own device."""
    import re

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise UsageError(f"--device: expected cpu, cuda, cuda:N or auto, got {device!r}")
    if device == "auto" and state is not None:
        return "cpu" if state.device.type == "cpu" else str(state.device)
    return device


def _is_main(state) -> bool:
    return state is None or state.is_main_process


def _json_line(record: dict) -> str:
    import json

    return json.dumps(record, ensure_ascii=False)


def _summary_line(record: dict, skipped: bool) -> str:
    if record["status"] == "error":
        return f"FAILED: {record['error']}"  # the message names the file
    if record["status"] == "skipped":
        return f"{record['image']}: not analysed: {record['reason']}"
    from ..analysis.defaults import verdict

    regions = ", ".join(record["regions"]) or "none"
    lines = [
        f"{record['image']}: {verdict(record['manipulated'], record['model'])} (score {record['manipulation_score']:.2f}); regions: {regions}; "
        f"mask {100 * record['mask_area_fraction']:.1f}% of the photo" + (" [from an earlier run]" if skipped else ""),
    ]
    if len(record["face_analyses"]) > 1:
        for face in record["face_analyses"]:
            face_regions = ", ".join(face["regions"]) or "none"
            lines.append(f"  face {face['face']} at {face['box']}: score {face['manipulation_score']:.2f}; regions: {face_regions}")
            lines.append(f"    report: {face['report']}")
    else:
        lines.append(f"  report: {record['report']}")
    lines += [f"  warning: {warning}" for warning in record["warnings"]]
    return "\n".join(lines)
