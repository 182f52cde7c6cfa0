"""Issue 21: the released-weights converter streams: it never holds the sources and the converted model whole.

At full size the InstructBLIP base is 15 GB in float32 (four safetensors shards), the two pickles 7 GB, the converted
checkpoint 9–13 GB: the converter reads each weight when its shard is written, from one source file at a time, and
what it writes is what `from_pretrained` of the same files would hold.
"""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import pytest
import torch
from released_checkpoints import convert, write_released_files
from safetensors.torch import load_file, save_file

from forgerytalker import ForgeryTalkerForConditionalGeneration
from forgerytalker.released_weights import CheckpointConversionError
from forgerytalker.released_weights import convert as convert_module
from forgerytalker.released_weights import streaming



@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return write_released_files(tmp_path_factory.mktemp("released"))


@pytest.fixture(scope="module")
def single_file(released, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "converted"
    convert(released, out)
    return load_file(out / "model.safetensors")


def _shard_base(files: dict, folder: Path, shards: int) -> dict:
    """A copy of `files` whose InstructBLIP base is split, as the release's is, into safetensors shards with an index."""
    base = Path(files["instructblip"])
    folder.mkdir()
    for path in base.rglob("*"):
        if path.is_file() and path.name != "model.safetensors":
            (folder / path.relative_to(base)).parent.mkdir(parents=True, exist_ok=True)
            (folder / path.relative_to(base)).write_bytes(path.read_bytes())
    weights = load_file(base / "model.safetensors")
    keys = list(weights)
    names = [f"model-{number:05d}-of-{shards:05d}.safetensors" for number in range(1, shards + 1)]
    weight_map = {key: names[position * shards // len(keys)] for position, key in enumerate(keys)}
    for name in names:
        save_file({key: weights[key] for key in keys if weight_map[key] == name}, folder / name, metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return {**files, "instructblip": folder}


def test_each_source_file_is_read_alone_and_the_pickles_are_released_before_the_base(released, single_file, tmp_path, monkeypatch):
    files = _shard_base(released, tmp_path / "sharded-base", shards=3)
    pickled, events = [], []
    read_pickle, open_file, close = convert_module.load_pickle, streaming._open_weight_file, streaming.WeightFiles.close

    def recording_read(*args, **kwargs):
        value = read_pickle(*args, **kwargs)
        state = value["model"] if isinstance(value, dict) and "model" in value else value
        pickled.extend(weakref.ref(tensor) for tensor in state.values())
        return value

    def recording_open(path):
        gc.collect()
        events.append(("open", Path(path).name, sum(reference() is not None for reference in pickled)))
        return open_file(path)

    def recording_close(self):
        if self._path is not None:
            events.append(("close", Path(self._path).name, None))
        close(self)

    monkeypatch.setattr(convert_module, "load_pickle", recording_read)
    monkeypatch.setattr(streaming, "_open_weight_file", recording_open)
    monkeypatch.setattr(streaming.WeightFiles, "close", recording_close)
    out = tmp_path / "out"
    convert(files, out, max_shard_size="300KB")

    opened = [name for kind, name, _ in events if kind == "open"]
    assert all(kind == "open" for kind, _, _ in events[0::2]) and all(kind == "close" for kind, _, _ in events[1::2])
    assert [name for kind, name, _ in events if kind == "close"] == opened  # never two files open at once
    writing = opened[-3:]  # the untying check reads the LM head and the embeddings first; then each shard once
    assert writing == sorted(writing) == [f"model-{number:05d}-of-00003.safetensors" for number in (1, 2, 3)]
    assert pickled and events[-6][2] == 0  # every pickled tensor was written and released before the base is read

    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 3 and not (out / "model.safetensors").exists()
    assert sorted(set(index["weight_map"].values())) == [shard.name for shard in shards]
    assert all(shard.stat().st_size <= 300_000 + 10_000 or len(load_file(shard)) == 1 for shard in shards)
    written = {key: value for shard in shards for key, value in load_file(shard).items()}
    assert index["metadata"]["total_size"] == sum(value.numel() * value.element_size() for value in written.values())
    assert written.keys() == single_file.keys() == set(index["weight_map"])
    assert all(torch.equal(written[key], single_file[key]) for key in single_file)


def test_a_base_in_torch_pickles_converts_to_the_same_weights(released, single_file, tmp_path):
    base = tmp_path / "bin-base"
    files = _shard_base(released, base, shards=1)
    (base / "model.safetensors.index.json").unlink()
    torch.save(load_file(base / "model-00001-of-00001.safetensors"), base / "pytorch_model.bin")
    (base / "model-00001-of-00001.safetensors").unlink()
    convert(files, tmp_path / "out")
    written = load_file(tmp_path / "out" / "model.safetensors")
    assert written.keys() == single_file.keys()
    assert all(torch.equal(written[key], single_file[key]) for key in single_file)


@pytest.mark.parametrize("dtype, keep", [("bfloat16", None), ("bfloat16", ()), ("float16", ()), ("float16", None)])
def test_every_weight_is_written_in_the_dtype_from_pretrained_gives_it(released, tmp_path, dtype, keep):
    """Loading the written checkpoint in the conversion's dtype changes no weight's dtype: the converter decides each
    dtype as transformers' loader does (the config's float32 modules, and Flan-T5's `wo` in float16)."""
    out = tmp_path / "out"
    convert(released, out, dtype=dtype, **({} if keep is None else {"keep_in_fp32_modules": keep}))
    written = load_file(out / "model.safetensors")
    model = ForgeryTalkerForConditionalGeneration.from_pretrained(out, dtype=getattr(torch, dtype))
    loaded = model.state_dict()
    assert {key: value.dtype for key, value in written.items()} == {key: loaded[key].dtype for key in written}
    uniform = dtype == "bfloat16" and keep == ()  # in float16, `wo` stays in float32 whatever the config says
    assert {value.dtype for value in written.values() if value.is_floating_point()} == (
        {torch.bfloat16} if uniform else {getattr(torch, dtype), torch.float32}
    )
    assert all(torch.equal(loaded[key], value) for key, value in written.items())
    saved = json.loads((out / "config.json").read_text())
    assert saved["dtype"] == str(next(model.parameters()).dtype).removeprefix("torch.")


def test_a_missing_base_shard_and_a_base_without_weights_are_named(released, tmp_path):
    files = _shard_base(released, tmp_path / "sharded-base", shards=2)
    missing = Path(files["instructblip"]) / "model-00002-of-00002.safetensors"
    missing.unlink()
    with pytest.raises(CheckpointConversionError, match="model-00002-of-00002.safetensors: listed in the weight index but missing") as error:
        convert(files, tmp_path / "out")
    assert error.value.argument == "instructblip"
    for path in Path(files["instructblip"]).glob("model*"):
        path.unlink()
    with pytest.raises(CheckpointConversionError, match="no InstructBLIP weights") as error:
        convert(files, tmp_path / "out")
    assert error.value.argument == "instructblip" and not (tmp_path / "out").exists()


def test_a_hub_id_is_downloaded_once_without_other_weight_formats(released, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(released["instructblip"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    convert({**released, "instructblip": "Salesforce/instructblip-flan-t5-xl"}, tmp_path / "out")
    assert [repo_id for repo_id, _ in calls] == ["Salesforce/instructblip-flan-t5-xl"]
    assert "*.bin" in calls[0][1]["ignore_patterns"]
    assert (tmp_path / "out" / "model.safetensors").exists()
