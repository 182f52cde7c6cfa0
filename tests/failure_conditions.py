"""Conditions the commands must survive, made on purpose: a run in a forked child (which may be killed), a
folder nothing can write into, a decompression-bomb PNG."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest


def run_in_child(target, timeout: float = 120) -> int:
    """Runs `target` in a forked child process and returns its exit code; a child that hangs fails the test."""
    process = multiprocessing.get_context("fork").Process(target=target)
    process.start()
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        pytest.fail(f"the command hung for {timeout} s")
    return process.exitcode


@contextlib.contextmanager
def read_only(folder: Path):
    """Makes `folder` unwritable for this process: permission bits, or for root (whom they do not stop) the
    immutable attribute; skips the test where neither is available."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root without `chattr +i`: nothing here can make a folder read-only for root")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def bomb_png(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header announces width × height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b"")
