"""The run folder and the content-keyed cache: where every stored thing lives.

```
<run>/sweep.yaml  run.json  results/*.parquet  logs/
<cache>/pretrain/<key>/last.pt  encoder-epochNNNNN.pt  meta.json   (meta.json = finished)
<cache>/features/<key>/epoch-NNNNN.pt  epoch-NNNNN.json           (json = checksum, written last)
```
Feature files are plain tensor dicts loaded with `torch.load(weights_only=True)` and
checked against the SHA-256 recorded beside them: a swapped or truncated file is refused
with an error naming it, never half-trusted. This module imports torch lazily so that
`ltsweep plan` / `status` stay fast.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ltsweep.store.atomic import atomic_path, write_json


class CacheError(RuntimeError):
    """A cache file is corrupt or does not match its checksum; the message names the file."""


def default_cache_dir(run_dir: Path) -> Path:
    """Beside the runs: `runs/<sweep>` -> `runs/.cache`, shared by every sweep under `runs/`."""
    return Path(os.environ.get("LTSWEEP_CACHE") or run_dir.resolve().parent / ".cache")


def run_cache_dir(run_dir: str | os.PathLike[str]) -> Path:
    """The cache a run folder was run with (recorded in run.json)."""
    info = json.loads((Path(run_dir) / "run.json").read_text())
    return Path(info["cache_dir"])


def pretrain_dir(cache: Path, key: str) -> Path:
    return Path(cache) / "pretrain" / key


def pretrain_done(cache: Path, key: str) -> bool:
    return (pretrain_dir(cache, key) / "meta.json").is_file()


def read_pretrain_meta(cache: Path, key: str) -> dict[str, Any]:
    path = pretrain_dir(cache, key) / "meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CacheError(f"{path}: unreadable pre-train record ({err})") from None


def features_path(cache: Path, key: str, epoch: int) -> Path:
    return Path(cache) / "features" / key / f"epoch-{epoch:05d}.pt"


def features_ready(cache: Path, key: str, epoch: int) -> bool:
    return features_path(cache, key, epoch).with_suffix(".json").is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_features(cache: Path, key: str, epoch: int, tensors: dict[str, Any]) -> Path:
    import torch

    path = features_path(cache, key, epoch)
    with atomic_path(path) as tmp:
        torch.save(tensors, tmp)
    shapes = {k: list(v.shape) for k, v in tensors.items() if hasattr(v, "shape")}
    write_json(path.with_suffix(".json"), {"sha256": _sha256(path), "shapes": shapes})
    return path


def verify_features(cache: Path, key: str, epoch: int) -> None:
    """Raise CacheError if the stored features do not match their checksum."""
    path = features_path(cache, key, epoch)
    meta_path = path.with_suffix(".json")
    try:
        expected = json.loads(meta_path.read_text())["sha256"]
    except (OSError, ValueError, KeyError) as err:
        raise CacheError(
            f"{meta_path}: unreadable feature checksum ({err}); delete {path.parent} to recompute"
        ) from None
    if not path.is_file() or _sha256(path) != expected:
        raise CacheError(
            f"{path}: corrupt feature cache (checksum mismatch); delete {path.parent} to recompute"
        )


def load_features(cache: Path, key: str, epoch: int, verify: bool = True) -> dict[str, Any]:
    """The frozen features of pre-train `key` at `epoch`: train, train_labels, test, test_labels, ..."""
    import torch

    path = features_path(cache, key, epoch)
    if verify:
        verify_features(cache, key, epoch)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unreadable means untrusted
        raise CacheError(
            f"{path}: unreadable feature cache ({type(err).__name__}); delete {path.parent} to recompute"
        ) from None
