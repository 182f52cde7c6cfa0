"""`accelerate launch` of several CPU processes, as the tests of multi-process commands run them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def launch_processes(arguments: list[str], scratch: Path, processes: int = 2, timeout: float = 600,
                     **environ: str) -> subprocess.CompletedProcess:
    """Runs `accelerate launch --multi_gpu --num_processes <processes> <arguments>` on the CPU (gloo); `scratch`
    receives the temporary files of torch's launcher. Returns the finished process (stdout and stderr as text)."""
    with socket.socket() as probe:  # a free port: other test runs on the machine may use accelerate's default
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), *arguments]
    scratch.mkdir(exist_ok=True)
    environment = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch),
                   "PYTHONUNBUFFERED": "1", **environ}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)
