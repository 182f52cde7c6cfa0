"""`--no-progress` hides every progress bar of a command, the libraries' ones too, and leaves them as it found them."""

from __future__ import annotations

import subprocess
import sys

import datasets
import huggingface_hub.utils as hub
import transformers.utils.logging as transformers_logging

from forgerytalker.cli import main
from forgerytalker.cli._progress import library_progress_bars

BAR = "it/s]"  # what every tqdm bar prints


def analyze_command(photo, checkpoint, out, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "forgerytalker.cli", "analyze", str(photo), "--model", str(checkpoint), "--out",
               str(out), "--num-threads", "1", "--max-new-tokens", "2", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_a_command_with_no_progress_prints_no_bar_of_its_own_or_of_the_libraries(tmp_path, saved_tiny_checkpoint,
                                                                                   face_photos_dir):
    photo = face_photos_dir / "grace_hopper.jpg"
    shown = analyze_command(photo, saved_tiny_checkpoint, tmp_path / "shown")
    assert shown.returncode == 0, shown.stderr
    assert "Loading weights" in shown.stderr and "analyze:" in shown.stderr  # transformers' bar and the command's
    hidden = analyze_command(photo, saved_tiny_checkpoint, tmp_path / "hidden", "--no-progress")
    assert hidden.returncode == 0, hidden.stderr
    assert BAR not in hidden.stderr and "Loading weights" not in hidden.stderr, hidden.stderr
    assert "1 of 1 photo(s) analysed" in hidden.stderr  # the command's own summary stays


def test_called_from_python_the_libraries_bars_are_hidden_for_the_command_and_shown_again_after(
        tmp_path, saved_tiny_checkpoint, face_photos_dir, capsys):
    assert transformers_logging.is_progress_bar_enabled() and not datasets.are_progress_bars_disabled()
    code = main(["analyze", str(face_photos_dir / "grace_hopper.jpg"), "--model", str(saved_tiny_checkpoint), "--out",
                 str(tmp_path / "out"), "--no-progress", "--num-threads", "1", "--max-new-tokens", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Loading weights" not in err and BAR not in err, err
    assert transformers_logging.is_progress_bar_enabled()
    assert not datasets.are_progress_bars_disabled() and not hub.are_progress_bars_disabled()


def test_a_user_s_own_choice_is_kept():
    hub.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    try:
        with library_progress_bars(shown=False):
            assert not transformers_logging.is_progress_bar_enabled()
        assert hub.are_progress_bars_disabled() and not transformers_logging.is_progress_bar_enabled()
    finally:
        hub.enable_progress_bars()
        transformers_logging.enable_progress_bar()
    hub.disable_progress_bars()  # huggingface_hub's hidden, transformers' shown
    try:
        with library_progress_bars(shown=False):
            pass
        assert hub.are_progress_bars_disabled() and transformers_logging.is_progress_bar_enabled()
    finally:
        hub.enable_progress_bars()
    with library_progress_bars(shown=True):
        assert transformers_logging.is_progress_bar_enabled() and not datasets.are_progress_bars_disabled()


def test_libraries_first_imported_during_the_command_start_hidden():
    """A fresh process, as the command line is: transformers and datasets are imported inside the block."""
    code = (
        "import os, sys\n"
        "from forgerytalker.cli._progress import library_progress_bars, DATASETS_VARIABLE\n"
        "assert 'transformers' not in sys.modules and 'datasets' not in sys.modules\n"
        "with library_progress_bars(shown=False):\n"
        "    import transformers.utils.logging as t, datasets\n"
        "    inside = (t.is_progress_bar_enabled(), datasets.are_progress_bars_disabled())\n"
        "print(inside, t.is_progress_bar_enabled(), DATASETS_VARIABLE in os.environ)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    # hidden inside; transformers' bars shown again after, and the variable gone (datasets keeps what it read)
    assert result.stdout.split("\n")[-2] == "(False, True) True False", result.stdout
