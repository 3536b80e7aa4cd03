"""The verified, atomically written tensor cache and the data directory."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest
import torch

from crmvae.data.cache import (
    ENV_DATA_DIR,
    cache_info,
    cache_paths,
    cached_build,
    read_manifest,
    resolve_data_dir,
    spec_key,
)
from crmvae.errors import DataError
from crmvae.fileio import file_sha256

SPEC = {"version": 3, "seed": 7, "sizes": [4, 2], "params": {"a": 1}}


class Builder:
    """Counts calls; returns the same tensors every time."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, torch.Tensor]:
        self.calls += 1
        return {
            "x": torch.arange(4000, dtype=torch.uint8).reshape(40, 100),
            "labels": torch.arange(40),
        }


def build_twice(tmp_path: Path) -> tuple[Builder, dict[str, torch.Tensor]]:
    build = Builder()
    cached_build("toy", SPEC, build, tmp_path)
    return build, cached_build("toy", SPEC, build, tmp_path)


def test_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv(ENV_DATA_DIR)
    assert resolve_data_dir() == Path.home() / ".cache" / "crmvae"


def test_spec_key_ignores_key_order_and_sees_values() -> None:
    assert spec_key({"a": 1, "b": 2}) == spec_key({"b": 2, "a": 1})
    assert spec_key({"a": 1}) != spec_key({"a": 2})


def test_manifest_written_and_cache_reused(tmp_path: Path) -> None:
    build, tensors = build_twice(tmp_path)
    assert build.calls == 1
    assert torch.equal(tensors["x"], Builder()()["x"])
    path, manifest_path = cache_paths("toy", SPEC, tmp_path)
    manifest = json.loads(manifest_path.read_text())
    assert manifest == read_manifest("toy", SPEC, tmp_path)
    assert manifest["spec"] == SPEC and manifest["generator_version"] == 3 and manifest["seed"] == 7
    assert manifest["shapes"] == {"x": [40, 100], "labels": [40]}
    assert manifest["sha256"] == file_sha256(path) and manifest["bytes"] == path.stat().st_size
    assert manifest["created"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name, manifest_path.name]
    )  # no temp files


def corrupt_truncate(path: Path, manifest_path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def corrupt_flip_byte(path: Path, manifest_path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def corrupt_wrong_sha(path: Path, manifest_path: Path) -> None:
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))


def corrupt_no_manifest(path: Path, manifest_path: Path) -> None:
    manifest_path.unlink()  # as after a crash between the tensor file and the manifest


def corrupt_stale_manifest(path: Path, manifest_path: Path) -> None:
    manifest = json.loads(manifest_path.read_text())
    manifest["spec"]["version"] = 2
    manifest_path.write_text(json.dumps(manifest))


def corrupt_garbled_manifest(path: Path, manifest_path: Path) -> None:
    manifest_path.write_text("{not json")


def corrupt_no_tensor_file(path: Path, manifest_path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (corrupt_truncate, "corrupt"),
        (corrupt_flip_byte, "sha256"),
        (corrupt_wrong_sha, "sha256"),
        (corrupt_no_manifest, "half-written"),
        (corrupt_stale_manifest, "stale"),
        (corrupt_garbled_manifest, "unreadable"),
        (corrupt_no_tensor_file, "incomplete"),
    ],
)
def test_bad_cache_is_detected_logged_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, corrupt, reason: str
) -> None:
    build = Builder()
    cached_build("toy", SPEC, build, tmp_path)
    path, manifest_path = cache_paths("toy", SPEC, tmp_path)
    corrupt(path, manifest_path)
    with caplog.at_level(logging.WARNING, logger="crmvae.data.cache"):
        tensors = cached_build("toy", SPEC, build, tmp_path)
    assert build.calls == 2
    assert reason in caplog.text and "rebuilding" in caplog.text
    assert torch.equal(tensors["labels"], torch.arange(40))
    cached_build("toy", SPEC, build, tmp_path)  # the rebuilt entry is trusted again
    assert build.calls == 2


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def fail() -> dict[str, torch.Tensor]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cached_build("toy", SPEC, fail, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_no_temp_file(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="pickle"):  # torch.save fails midway on a lock
        cached_build("toy", SPEC, lambda: {"x": threading.Lock()}, tmp_path)  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []


def test_different_specs_get_different_entries(tmp_path: Path) -> None:
    build = Builder()
    cached_build("toy", SPEC, build, tmp_path)
    cached_build("toy", {**SPEC, "seed": 8}, build, tmp_path)
    assert build.calls == 2
    assert len(list(tmp_path.glob("toy-*.pt"))) == 2


@pytest.mark.parametrize("manifest", [None, {}, {"shapes": []}, {"shapes": {"x": "40"}}, {"shapes": {"labels": []}}])
def test_cache_info_reads_sizes_and_survives_damaged_manifests(tmp_path: Path, manifest: object) -> None:
    assert cache_info("toy", lambda: SPEC, tmp_path)["available"] is None  # nothing built yet
    cached_build("toy", SPEC, Builder(), tmp_path)
    info = cache_info("toy", lambda: SPEC, tmp_path)
    assert info["available"] == 40 and info["cache"] == str(cache_paths("toy", SPEC, tmp_path)[0])
    assert info["manifest"]["shapes"]["labels"] == [40]
    cache_paths("toy", SPEC, tmp_path)[1].write_text(json.dumps(manifest))
    assert cache_info("toy", lambda: SPEC, tmp_path)["available"] is None


def test_cache_info_reports_the_listed_errors_of_the_spec(tmp_path: Path) -> None:
    def unreadable() -> dict:
        raise DataError("images.txt: line 3 is not 'id path'")

    assert cache_info("toy", unreadable, tmp_path, errors=(DataError,)) == {"error": "images.txt: line 3 is not 'id path'"}
    with pytest.raises(DataError):
        cache_info("toy", unreadable, tmp_path)
