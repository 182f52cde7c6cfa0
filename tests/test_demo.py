"""The web demo answers a real HTTP request: `forgerytalker demo` in its own process, called with gradio_client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client", reason="the demo needs the `demo` extra (gradio)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the demo exited with {server.returncode}: {server.stderr.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the demo did not answer at {url} within {seconds} s")


@pytest.fixture
def demo_server(tmp_path, face_photos_dir):
    """The demo as a user starts it: the bundled model, the user's own example photos."""
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(tmp_path / "gradio"))
    command = [sys.executable, "-m", "forgerytalker.cli", "demo", "--port", str(port), "--num-threads", "1",
               "--examples", str(face_photos_dir), "--max-upload-mb", "1"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()
        server.stderr.close()


@pytest.mark.slow
def test_the_demo_answers_a_request_over_http(demo_server, tmp_path, face_photos_dir):
    client = gradio_client.Client(demo_server, download_files=str(tmp_path / "downloads"), verbose=False)
    photo = face_photos_dir / "grace_hopper.jpg"
    heatmap, bars, report, record = client.predict(
        gradio_client.handle_file(str(photo)), ["eye", "nose"], api_name="/analyze"
    )
    with Image.open(photo) as original, Image.open(heatmap) as overlay:
        assert overlay.format == "PNG" and overlay.size == original.size  # 512 × 600, under the 768 px display cap
    assert {item["label"] for item in bars["confidences"]} == set(record["region_probabilities"])
    assert len(bars["confidences"]) == 21
    assert isinstance(report, str) and report == record["report"] and len(record["face_analyses"]) == 1
    assert record["instruction_regions"] == ["eye", "nose"] and record["faces"] == 1
    assert record["status"] == "ok" and 0.0 <= record["manipulation_score"] <= 1.0
    assert "default_model" in record["model"]  # no --model: the bundled demo model
    grace = Image.open(photo).convert("RGB").resize((256, 300))
    group = Image.new("RGB", (512, 300))
    group.paste(grace, (0, 0))
    group.paste(grace.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (256, 0))
    group.save(tmp_path / "group.png")
    heatmap, _, report, record = client.predict(gradio_client.handle_file(str(tmp_path / "group.png")), [], api_name="/analyze")
    assert [face["face"] for face in record["face_analyses"]] == [1, 2] and record["face_mode"] == "every"
    for face in record["face_analyses"]:  # each face's number, regions and report on the page
        assert f"Face {face['face']} (score {face['manipulation_score']:.2f}; regions: " in report
        assert face["report"] in report
    with Image.open(heatmap) as overlay:
        left, top = record["face_analyses"][1]["box"][:2]
        assert overlay.convert("RGB").getpixel((left, top + 3)) == (40, 200, 255)  # the face's numbered box
    uploads = tmp_path / "gradio"
    assert not list(uploads.rglob("group.png"))  # issue 19 N8: the server's copy of an upload is removed once read
    assert record["image"] == "group.png"  # named by the file the user sent, not the server's copy
    assert list(uploads.rglob("grace_hopper.jpg"))  # an example photo's copy is the app's own: kept
    huge = tmp_path / "huge.png"  # issue 19 N8: a 300 MB upload was accepted and kept
    huge.write_bytes(b"\x89PNG" + bytes(2 * 2**20))
    with pytest.raises(Exception, match="(?i)file.*(large|size)|413"):
        client.predict(gradio_client.handle_file(str(huge)), [], api_name="/analyze")
    assert not [path for path in (tmp_path / "gradio").rglob("huge.png")]  # refused before it was stored
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    with pytest.raises(Exception, match="(?i)image|picture") as caught:  # the reason reaches the page
        client.predict(gradio_client.handle_file(str(broken)), [], api_name="/analyze")
    # issue 19 N8: read by the project's reader, not decoded by Gradio first; named by its own name, and the
    # server's temporary copy is neither shown nor kept
    message = str(caught.value)
    assert message.startswith("broken.png: ") and str(uploads) not in message and "gradio" not in message
    assert not list(uploads.rglob("broken.png"))


def test_an_upload_is_read_once_deleted_and_remembered_for_the_next_analysis(tmp_path):
    """Issue 19 N8: uploads were left in the temporary folder. The server's copy is deleted once read; ticking
    regions and analysing the same upload again reads it from memory, for the last few uploads only."""
    import gradio as gr

    from forgerytalker.demo.uploads import Upload, UploadedPhotos

    seen = []
    uploads = UploadedPhotos(lambda source, name: seen.append((source, name)) or name, keep=1)
    copies = []
    for index, name in enumerate(("face.png", "other.png")):
        copy = tmp_path / "gradio" / f"hash{index}" / name
        copy.parent.mkdir(parents=True)
        copy.write_bytes(f"picture {index}".encode())
        copies.append(Upload(str(copy), name, temporary=True))
    assert uploads.read(copies[0]) == "face.png" and seen[-1] == (b"picture 0", "face.png")
    assert not (tmp_path / "gradio" / "hash0").exists()  # the copy and the folder Gradio made for it
    assert uploads.read(copies[0]) == "face.png" and seen[-1] == (b"picture 0", "face.png")  # again, from memory
    uploads.read(copies[1])  # a newer upload: only the last one is remembered here
    with pytest.raises(gr.Error, match="face.png: the upload is no longer on the server; upload the photo again"):
        uploads.read(copies[0])
    example = tmp_path / "example.png"
    example.write_bytes(b"the app's own photo")
    uploads.read(Upload(str(example), "example.png", temporary=False))
    assert seen[-1] == (str(example), "example.png") and example.exists()  # read in place, never deleted


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_an_examples_folder_without_photos_is_refused_naming_the_flag(tmp_path, make):
    folder = tmp_path / "examples"
    if make == "empty":
        folder.mkdir()
    result = subprocess.run([sys.executable, "-m", "forgerytalker.cli", "demo", "--examples", str(folder)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--examples" in result.stderr
