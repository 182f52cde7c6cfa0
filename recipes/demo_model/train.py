"""The demo model's training runs: `accelerate launch training/run.py` for stage 1 and stage 2, two CPU
processes of one thread each (DDP over gloo), resumed where a run was killed."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .settings import RecipeSettings

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[2]
PROCESSES = 2


def _launch(arguments: list[str], output_dir: Path) -> Path:
    """Runs one training stage into `output_dir` (resuming a killed run) and returns the model folder to use:
    `best/` (chosen on the validation identities) when the run kept one, else the final model."""
    if not (output_dir / "config.json").is_file():
        resume = ["--resume"] if output_dir.is_dir() and any(output_dir.iterdir()) else []
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(PROCESSES),
                   "--num_machines", "1", "--main_process_port", "29533", str(REPOSITORY / "training" / "run.py"),
                   *arguments, "--output_dir", str(output_dir), "--report_to_tensorboard", "false", *resume]
        # torch elastic leaves a folder per launch in the temporary directory: give it one of the run's own
        scratch = output_dir.with_name(output_dir.name + ".tmp")
        scratch.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)}
        logger.info("$ %s", " ".join(command))
        try:
            subprocess.run(command, check=True, env=env)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return trained_model(output_dir)


def trained_model(output_dir: Path) -> Path:
    """The model a finished training run in `output_dir` gives: its `best/` checkpoint where it kept one, else its
    final model."""
    best = output_dir / "best"
    return best if (best / "config.json").is_file() else output_dir


def _schedule(steps: int, batch_size: int, learning_rate: float, settings: RecipeSettings, eval_points: int,
              max_eval_samples: int | None) -> list[str]:
    per_process = max(1, batch_size // PROCESSES)
    every = max(1, steps // eval_points)
    limit = ["--max_eval_samples", str(max_eval_samples)] if max_eval_samples else []
    return ["--max_steps", str(steps), "--per_device_train_batch_size", str(per_process),
            "--per_device_eval_batch_size", str(2 * per_process), "--learning_rate", str(learning_rate),
            "--warmup_steps", str(max(1, steps // 20)), "--lr_scheduler_type", "cosine", "--eval_steps", str(every),
            "--save_steps", str(every), "--logging_steps", str(max(1, steps // 50)), "--seed", str(settings.seed),
            "--augment", "true", *limit]


def train_prompter(dataset: Path, initial_prompter: Path, out: Path, settings: RecipeSettings, fraction: float = 1.0) -> Path:
    """Stage 1: the Forgery Prompter Network alone, on region labels; the checkpoint with the best validation
    detection AUC is kept. A share of the steps (`fraction`, the leave-one-out prompters, judged on detection alone)
    fits the region map on the same share of the faces."""
    steps = max(2, round(settings.prompter_steps * fraction))
    map_samples = max(1, round(settings.region_map_samples * fraction))
    return _launch(["--stage", "prompter", "--dataset", str(dataset), "--prompter_name_or_path", str(initial_prompter),
                    "--best_metric", "AUC", "--region_map_samples", str(map_samples),
                    *_schedule(steps, settings.batch_size, settings.prompter_learning_rate, settings,
                               settings.prompter_eval_points, None)], out)


def train_joint(dataset: Path, initial_model: Path, prompter: Path, out: Path, settings: RecipeSettings,
                fraction: float = 1.0, mask_only: bool = False) -> Path:
    """Stage 2 with the stage-1 prompter frozen. Unlike the paper, which freezes a pretrained EVA-ViT and
    Vicuna, the demo trains its vision encoder and language model too (they start from random weights), and
    the instruction names the true regions while training (teacher forcing: the model learns to read them).
    Both models keep the checkpoint with the best validation IoU: CIDEr on `max_eval_samples` images is too noisy to
    choose by (the session-28 run: step 250 of 500 by 97.9 against 91.4 on 128 images; on all 320 validation images,
    each at its best generation setting, 90.50 against 90.74, with mask IoU 62.42 against 62.87)."""
    steps = max(2, round(settings.joint_steps * fraction))
    arguments = ["--stage", "joint", "--dataset", str(dataset), "--model_name_or_path", str(initial_model),
                 "--prompter_name_or_path", str(prompter), "--train_vision_encoder", "true",
                 "--train_language_model", str(not mask_only).lower(), "--train_region_source", "ground_truth",
                 "--generation_max_new_tokens", str(settings.max_new_tokens),
                 *_schedule(steps, settings.batch_size, settings.joint_learning_rate, settings, settings.eval_points,
                            settings.max_eval_samples), "--best_metric", "IoU"]
    if mask_only:
        arguments += ["--mask_only", "true"]
    return _launch(arguments, out)
