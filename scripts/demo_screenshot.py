"""Renders the web demo in headless Chromium (Debian's `chromium` package) and saves a screenshot.

    apt-get install -y chromium
    python scripts/demo_screenshot.py [--model PATH] [--out docs/demo-screenshot.png]

Starts `forgerytalker demo` on a free local port (with the bundled demo model unless --model is given) offering
forgeries that `forgerytalker data synthesize` makes from scikit-image's astronaut and matplotlib's Grace Hopper
photos (made in a temporary folder, never saved), waits for it to answer, lets Chromium load the page (which
opens with the first example analysed) and saves the picture.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the demo exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    sys.exit(f"the demo did not answer at {url} within {seconds:.0f} s")


def example_forgeries(folder: Path, count: int = 3) -> Path:
    """`count` forgeries of two public-domain photos, in `folder / "examples"`."""
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    from forgerytalker.data.synthesis.pipeline import SynthesisConfig, synthesize

    photos = folder / "photos"
    photos.mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(photos / "astronaut.png")
    shutil.copy(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), photos / "grace_hopper.jpg")
    synthesize(SynthesisConfig(photos, folder / "forged", 2 * count, seed=3, authentic_rate=0.0, max_regions=4,
                               eval_every=0, show_progress=False))
    examples = folder / "examples"
    examples.mkdir()
    for path in sorted(path for path in (folder / "forged" / "dataset").rglob("syn*.png") if "masks" not in path.parts)[:count]:
        shutil.copy(path, examples / path.name)
    return examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint folder (default: the bundled demo model)")
    parser.add_argument("--out", default="docs/demo-screenshot.png")
    parser.add_argument("--window-size", default="1400,1750")
    parser.add_argument("--wait-ms", type=int, default=20000, help="virtual time Chromium gives the page to render")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium not found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="forgerytalker-screenshot-") as scratch:
        scratch = Path(scratch)
        examples = example_forgeries(scratch / "faces")
        port = free_port()
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(scratch / "gradio"))
        command = [sys.executable, "-m", "forgerytalker.cli", "demo", "--port", str(port), "--num-threads", "1",
                   "--examples", str(examples), *(["--model", args.model] if args.model else [])]
        server = subprocess.Popen(command, env=env)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_for(url, server)
            out = Path(args.out).resolve()
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={scratch / 'chromium'}", f"--window-size={args.window_size}",
                 f"--virtual-time-budget={args.wait_ms}", f"--screenshot={out}", url],
                check=True, timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            print(f"Saved {out}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
