"""`forgerytalker demo`: the Gradio web demo on this machine (needs `pip install forgerytalker[demo]`)."""

from __future__ import annotations

import argparse
import os
import sys

from ._threads import torch_threads
from .analyze import UsageError, _device, _load_pipeline, _model_argument
from .arguments import positive_int

DEFAULT_MAX_UPLOAD_MB = 25
"""Face photos are rarely larger; a larger upload is refused by Gradio before it is written to disk."""


def _port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be at most 65535, got {value}")
    return value


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="start the web demo: upload a face, see the heatmap, the region bars and the report",
        description="Starts a Gradio app on this machine (http://HOST:PORT); Ctrl-C stops it.",
    )
    parser.add_argument("--model", help="ForgeryTalker checkpoint folder or hub id (default: the bundled demo model, see docs/RESULTS.md)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=_port, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--share",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also open a public gradio.live link (default: off; needs internet)",
    )
    parser.add_argument(
        "--examples", help="a folder of photos to offer as examples (default: faces the demo draws, no real person)"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--max-upload-mb",
        type=positive_int,
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"refuse uploads larger than this many megabytes before they are stored (default {DEFAULT_MAX_UPLOAD_MB})",
    )
    parser.add_argument("--num-threads", type=positive_int, help="torch's CPU threads (default: OMP_NUM_THREADS if set, else the cores idle at start)")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("error: the demo needs Gradio: pip install 'forgerytalker[demo]'", file=sys.stderr)
        return 2
    try:
        example_photos = _example_photos(args.examples)
        model = _model_argument(args.model)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with torch_threads(args.num_threads):
        try:
            pipe = _load_pipeline(model, _device(args.device, None), "float32")
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        from ..demo import build_demo

        build_demo(pipe, example_photos=example_photos).launch(
            server_name=args.host, server_port=args.port, share=args.share, show_error=True,
            max_file_size=args.max_upload_mb * 2**20,
        )
    return 0


def _example_photos(folder: str | None) -> list[str] | None:
    if folder is None:
        return None
    from ..analysis.inputs import InputPathError, collect_photos

    if not os.path.isdir(folder):
        raise UsageError(f"--examples: no such folder: {folder}")
    try:
        return [photo.path for photo in collect_photos([folder])]
    except InputPathError as error:
        raise UsageError(f"--examples: {error}") from None
