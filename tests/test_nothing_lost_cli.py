"""Issue 19 (nothing lost, round two), through `forgerytalker.cli.main` or a subprocess: the rows whose earlier tests
called a Python function or left out one of the commands the row names (N2 and N14 data convert, F18 data
synthesize, N10 links in push's folders, N7 the web demo), and the one output-folder policy (writable, locked) for
the commands that write a folder whole (`convert-checkpoint`, `push --dry-run`).

The other rows are tested where their command is: N1 test_evaluate; N2 (the convert sub-parser) and F18 (convert)
test_data_convert; N3-N6, N7 (analyze), N11, N12, M1-M3 test_analyze; N8 test_demo; N9, N13 test_released_weights;
N10 (report entries), N15 test_hub_cards; F14, R1 test_training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from forgerytalker.cli import main
from forgerytalker.output_folder import hold_lock

@pytest.fixture(autouse=True)
def offline_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _picture(path: Path, seed: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    if mode == "L":
        pixels = np.where(pixels[..., 0] > 127, 255, 0).astype(np.uint8)
    Image.fromarray(pixels, mode=mode).save(path)


def _record(image_id: str, image: str, mask: str) -> dict:
    from forgerytalker.regions import caption_to_labels

    caption = "The eyes look blurred and the nose has an unnatural outline."
    return {"image_id": image_id, "img_path": image, "mask_path": mask, "caption": caption,
            "multilabel": caption_to_labels(caption)}


def _mmtt_root(tmp_path: Path, *links: str) -> Path:
    """A one-record MMTT root (`good`), and a record per link name whose image is a link to the user's photo outside
    the root (`private/holiday.png`)."""
    root, folder = tmp_path / "mmtt", "dataset/celeb512/mat_gan/samples_celeb"
    _picture(tmp_path / "private" / "holiday.png", 1)
    _picture(root / folder / "good.png", 2)
    _picture(root / folder / "masks" / "good.png", 3, mode="L")
    records = [_record("good", f"{folder}/good.png", f"{folder}/masks/good.png")]
    for name in links:
        (root / folder / f"{name}.png").symlink_to(tmp_path / "private" / "holiday.png")
        records.append(_record(name, f"{folder}/{name}.png", f"{folder}/masks/good.png"))
    (root / "train-mutilabel-simple.json").write_text(json.dumps(records))
    return root


def test_convert_overwrite_never_deletes_a_file_its_report_lists_outside_out(tmp_path, capsys):
    """N2: `data convert --overwrite` where `conversion_report.json` lists `../x` or an absolute path deleted them."""
    root, out = _mmtt_root(tmp_path), tmp_path / "out"
    arguments = ["data", "convert", "--mmtt-root", str(root), "--out", str(out), "--no-progress"]
    assert main(arguments) == 0
    outside = tmp_path / "x"
    for entry in ("../x", str(outside)):
        outside.write_text("the user's file")
        report = json.loads((out / "conversion_report.json").read_text())
        report["files"] = {**report["files"], entry: outside.stat().st_size}
        (out / "conversion_report.json").write_text(json.dumps(report))
        before = sorted(path.name for path in out.rglob("*"))
        assert main([*arguments, "--overwrite"]) == 2
        error = capsys.readouterr().err
        assert "error: --out: " in error and repr(entry) in error and "nothing was deleted" in error
        assert outside.read_text() == "the user's file" and sorted(path.name for path in out.rglob("*")) == before
        report["files"].pop(entry)
        (out / "conversion_report.json").write_text(json.dumps(report))


def test_convert_never_embeds_the_file_a_link_in_the_root_leads_to(tmp_path, capsys):
    """N14: a record's image is a link inside the MMTT root leading out of it; the outside file was embedded."""
    root, out = _mmtt_root(tmp_path, "linked"), tmp_path / "out"

    assert main(["data", "convert", "--mmtt-root", str(root), "--out", str(out), "--no-progress"]) == 0
    assert "Wrote 1 examples" in capsys.readouterr().out  # the link is left out
    shards = sorted((out / "data").glob("*.parquet"))
    assert [image_id for shard in shards for image_id in pq.read_table(shard).column("image_id").to_pylist()] == ["good"]
    report = json.loads((out / "conversion_report.json").read_text())
    assert "leading out of the dataset root" in json.dumps(report) and "unsafe_path" in json.dumps(report)
    secret = (tmp_path / "private" / "holiday.png").read_bytes()
    assert not any(secret in path.read_bytes() for path in out.rglob("*") if path.is_file())


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's parent-death signal is Linux's")
def test_synthesize_workers_die_with_their_parent_killed_by_sigkill(face_photos_dir, tmp_path):
    """F18: the parent of `data synthesize --num-workers 2` killed with SIGKILL left its workers running."""
    from worker_deaths import workers_left_after_killing_the_parent

    faces = tmp_path / "faces"
    shutil.copytree(face_photos_dir, faces)
    for copy in range(3):  # more photos than workers, so that both start one
        for photo in list(face_photos_dir.iterdir()):
            shutil.copy(photo, faces / f"{copy}-{photo.name}")
    arguments = ["data", "synthesize", "--faces", str(faces), "--out", str(tmp_path / "out"), "--num-samples", "4",
                 "--num-workers", "2", "--no-progress"]
    assert workers_left_after_killing_the_parent(arguments, tmp_path) == []


def _secret(tmp_path: Path) -> Path:
    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("PRIVATE KEY")
    return secret


def _staged_text(folder: Path) -> str:
    return "".join(path.read_text(errors="ignore") for path in folder.rglob("*") if path.is_file())


def test_push_never_stages_what_a_link_in_the_folder_leads_to(tmp_path, tiny_dataset_dir, saved_tiny_checkpoint, capsys):
    """N10: a dataset folder holding a link to `~/.ssh`; a model folder whose description (`ABOUT_FILE`, published
    as it is) is a link to a secret."""
    from forgerytalker.hub_cards.model_card import ABOUT_FILE

    secret = _secret(tmp_path)
    dataset = tmp_path / "dataset"
    shutil.copytree(tiny_dataset_dir, dataset)
    (dataset / "data" / "ssh").symlink_to(secret.parent, target_is_directory=True)  # not listed by the conversion
    out = tmp_path / "dataset-upload"
    assert main(["push", "--dataset", str(dataset), "--repo-id", "acme/mmtt", "--dry-run", "--out", str(out)]) == 0
    assert not (out / "data" / "ssh").exists() and "PRIVATE KEY" not in _staged_text(out)

    model = tmp_path / "model"
    shutil.copytree(saved_tiny_checkpoint, model)
    (model / ABOUT_FILE).symlink_to(secret)
    out = tmp_path / "model-upload"
    assert main(["push", "--model", str(model), "--repo-id", "acme/x", "--dry-run", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"error: --model: {ABOUT_FILE}: " in error and "leads out of" in error and "Traceback" not in error
    assert not out.exists() and "PRIVATE KEY" not in _staged_text(tmp_path / "model-upload")


def test_push_dry_run_is_refused_while_another_writes_the_same_out(tmp_path, saved_tiny_checkpoint, capsys):
    """One policy: `push --dry-run` took no lock, so two runs staged into the same folder at once."""
    out = tmp_path / "upload"
    arguments = ["push", "--model", str(saved_tiny_checkpoint), "--repo-id", "acme/x", "--dry-run", "--out", str(out)]
    held = hold_lock(out, "forgerytalker push", beside=True)  # a first run, still staging
    assert main(arguments) == 2
    assert f"error: --out: another forgerytalker push is writing into {out}" in capsys.readouterr().err
    assert not out.exists()
    held.close()
    assert main(arguments) == 0 and (out / "config.json").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["upload"]  # no lock or staging left beside it

    (tmp_path / "a-file").write_text("x")
    assert main([*arguments[:-1], str(tmp_path / "a-file" / "upload")]) == 2
    assert "error: --out: cannot create" in capsys.readouterr().err


def test_convert_checkpoint_is_refused_while_another_writes_the_same_out(tmp_path, capsys):
    """One policy: `convert-checkpoint` took no lock, so two conversions could replace one folder at once; an --out
    under a file is refused before the weights are read."""
    from released_checkpoints import FACE_VIT, MASK_PATH, write_released_files

    files = write_released_files(tmp_path / "released")
    out = tmp_path / "out"
    arguments = ["convert-checkpoint", "--instructblip", str(files["instructblip"]), "--dff-checkpoint",
                 str(files["dff"]), "--face-vit-checkpoint", str(files["face_vit"]), "--out", str(out),
                 "--prompter-heads", str(FACE_VIT["heads"]), "--mask-decoder-heads", str(MASK_PATH["heads"])]
    held = hold_lock(out, "forgerytalker convert-checkpoint", beside=True)
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert f"error: --out: another forgerytalker convert-checkpoint is writing into {out}" in error
    assert not out.exists()
    held.close()
    assert main(arguments) == 0 and (out / "config.json").is_file()
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]

    (tmp_path / "a-file").write_text("x")
    assert main([*arguments[:-5], str(tmp_path / "a-file" / "out"), *arguments[-4:]]) == 2
    assert f"error: --out: cannot create {tmp_path / 'a-file' / 'out'}" in capsys.readouterr().err


def _peak_memory_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads the server's peak memory from /proc")
def test_the_demo_refuses_a_small_upload_that_decodes_to_gigabytes(tmp_path, face_photos_dir):
    """N7 (web demo): a 12 KB 1-bit PNG of 9990 x 9990 took 2.6 GB of the server's memory per upload."""
    gradio_client = pytest.importorskip("gradio_client", reason="the demo needs the `demo` extra (gradio)")
    from test_demo import free_port, wait_for

    bomb = tmp_path / "bomb.png"
    Image.new("1", (9990, 9990)).save(bomb)
    assert bomb.stat().st_size < 100_000  # under the 1 MB upload limit below
    port = free_port()
    environment = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(tmp_path / "gradio"))
    command = [sys.executable, "-m", "forgerytalker.cli", "demo", "--port", str(port), "--num-threads", "1",
               "--examples", str(face_photos_dir), "--max-upload-mb", "1"]
    server = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/", server)
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", download_files=str(tmp_path / "d"), verbose=False)
        before = _peak_memory_mib(server.pid)
        with pytest.raises(Exception, match="refused before decoding") as caught:
            client.predict(gradio_client.handle_file(str(bomb)), [], api_name="/analyze")
        grown = _peak_memory_mib(server.pid) - before
    finally:
        server.terminate()
        server.wait(timeout=60)
        server.stderr.close()
    message = str(caught.value)
    assert message.startswith("bomb.png: 9990×9990") and "GiB of memory" in message
    assert grown < 200, f"the server's peak memory grew by {grown:.0f} MiB"  # decoded, it would be 300 MiB to 2.6 GB
