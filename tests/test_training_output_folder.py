"""The output folder of a training run: a finished run's folder is refused or replaced whole, never mixed with
a new run, and `--overwrite_output_dir` deletes only the files a training run wrote (issue 19)."""

from __future__ import annotations

import json
import shutil

from training_runs import folder_digest, read_log, run_cli, step_records, tiny, train_here


def test_a_new_run_refuses_a_finished_runs_output_dir(stage_one, tiny_dataset_dir, capsys, no_model_may_be_built):
    before = folder_digest(stage_one)
    assert run_cli(*tiny("prompter", tiny_dataset_dir, stage_one)) == 2
    assert "--output_dir: " in capsys.readouterr().err
    # resuming under other settings would restore this run's weights into a different run
    assert run_cli(*tiny("prompter", tiny_dataset_dir, stage_one, "--resume", "--learning_rate", "0.1")) == 2
    assert "--resume: the run in" in (err := capsys.readouterr().err) and "learning_rate: 0.003 -> 0.1" in err
    assert folder_digest(stage_one) == before


def test_overwrite_output_dir_replaces_the_earlier_run(stage_one, tiny_dataset_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(stage_one, run)
    train_here(*tiny("prompter", tiny_dataset_dir, run, "--overwrite_output_dir", "--max_steps", "2", "--save_steps", "1",
                     "--eval_steps", "2"))
    # the earlier run's later-numbered checkpoints would otherwise have rotated the new run's away
    assert [path.name for path in sorted((run / "checkpoints").iterdir())] == ["step-00000001", "step-00000002"]
    log = read_log(run)
    assert sorted(step_records(log)) == [1, 2] and [r["step"] for r in log if "validation" in r] == [2]
    assert json.loads((run / "training_args.json").read_text())["max_steps"] == 2


def test_overwrite_output_dir_never_deletes_a_file_the_run_did_not_write(stage_one, tiny_dataset_dir, tmp_path, capsys,
                                                                       no_model_may_be_built):
    """Issue 19 (one output-folder policy): --overwrite_output_dir cleared checkpoints/, best/ and the log of any
    folder; now only a training run's folder, holding only its files (the shared manifest), and one run at a time."""
    from forgerytalker.output_folder import MANIFEST_NAME, hold_lock

    run = tmp_path / "run"
    shutil.copytree(stage_one, run)
    assert (run / MANIFEST_NAME).is_file()  # the finished run's record of its files
    (run / "checkpoints" / "my-notes.txt").write_text("mine")
    before = folder_digest(run)
    assert run_cli(*tiny("prompter", tiny_dataset_dir, run, "--overwrite_output_dir")) == 2
    error = capsys.readouterr().err
    assert "--output_dir: " in error and "did not write (checkpoints/my-notes.txt)" in error and "Traceback" not in error
    assert folder_digest(run) == before

    mine = tmp_path / "mine"  # not a training run's folder at all
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "checkpoints" / "thesis.tex").write_text("mine")
    assert run_cli(*tiny("prompter", tiny_dataset_dir, mine, "--overwrite_output_dir")) == 2
    assert "is not the folder of a training run" in capsys.readouterr().err
    assert (mine / "checkpoints" / "thesis.tex").read_text() == "mine"

    (run / "checkpoints" / "my-notes.txt").unlink()
    held = hold_lock(run, "forgerytalker train")  # a first run, still writing
    assert run_cli(*tiny("prompter", tiny_dataset_dir, run, "--overwrite_output_dir")) == 2
    assert "another forgerytalker train is writing into" in capsys.readouterr().err
    held.close()
    assert (run / "log.jsonl").is_file()  # nothing cleared while the other run held the folder
