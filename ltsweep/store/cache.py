"""The run folder and the content-keyed cache: where every stored thing lives.

```
<run>/sweep.yaml  run.json  results/*.parquet  logs/
<cache>/pretrain/<key>/last.pt  encoder-epochNNNNN.pt  meta.json   (meta.json = finished)
<cache>/features/<key>/epoch-NNNNN.pt  epoch-NNNNN.json           (json = checksum, written last)
```
Feature files are plain tensor dicts loaded with `torch.load(weights_only=True)` and
checked against the SHA-256 recorded beside them: a swapped or truncated file is never
half-trusted. A run verifies every entry it will read before it schedules anything, moves a
damaged one to `<cache>/.quarantine/` and recomputes it (`quarantine_features`). Training
checkpoints (`save_checkpoint`) keep the previous one as `prev.pt`, both with a SHA-256
beside them, so a damaged `last.pt` falls back to the one before (`load_checkpoint`); the
encoder snapshots of kept epochs carry one too (`save_verified` / `load_verified`). This
module imports torch lazily so that `ltsweep plan` / `status` stay fast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ltsweep.store.atomic import atomic_path, move_aside, write_json

log = logging.getLogger("ltsweep.cache")
T = TypeVar("T")


#: what a damaged cache entry met by a worker says: the next run repairs it
AGAIN = "; the next `ltsweep run` moves it aside and recomputes it"


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
        raise CacheError(f"{meta_path}: unreadable feature checksum ({err}){AGAIN}") from None
    if not path.is_file() or _sha256(path) != expected:
        raise CacheError(f"{path}: corrupt feature cache (checksum mismatch){AGAIN}")


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
            f"{path}: unreadable feature cache ({type(err).__name__}){AGAIN}"
        ) from None


def quarantine_features(cache: Path, key: str, epoch: int) -> list[Path]:
    """Move the feature file of (`key`, `epoch`) and its checksum to `<cache>/.quarantine/`;
    the pre-train then computes them again. Returns where they went."""
    path = features_path(cache, key, epoch)
    moved = []
    for p in (path.with_suffix(".json"), path):  # the checksum first: it marks the entry done
        if p.exists():
            moved.append(move_aside(p, cache))
    return moved


def check_pretrain_meta(cache: Path, key: str) -> str | None:
    """Why the finished-pre-train record of `key` is unreadable, or None (also if absent)."""
    path = pretrain_dir(cache, key) / "meta.json"
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
        int(meta["epochs"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{type(err).__name__}: {err}"
    return None


# --- files with their SHA-256 beside them: checkpoints and encoder snapshots ----------------


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _previous(path: Path) -> Path:
    return path.with_name("prev" + path.suffix)


def save_verified(path: str | os.PathLike[str], obj: Any) -> None:
    """`torch.save` `obj` atomically, then its SHA-256 beside it as `<name>.sha256`, so that a
    later truncation, bit flip or swap of the file is caught when it is read (a write cut off
    midway never appears under `path`: the rename is atomic)."""
    import torch

    path = Path(path)
    _digest_path(path).unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    with atomic_path(_digest_path(path)) as tmp:
        tmp.write_text(_sha256(path) + "\n")


def load_verified(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """What `save_verified` stored at `path`, loaded with `weights_only=True` after its checksum
    is checked (files from before checksums have none: `torch.load` alone decides). Raises
    `CacheError` naming the file if it is missing, damaged or unreadable."""
    import torch

    path = Path(path)
    digest = _digest_path(path)
    try:
        if digest.exists() and digest.read_text().strip() != _sha256(path):
            raise CacheError(f"{path}: checksum mismatch")
        return torch.load(path, map_location=map_location, weights_only=True)
    except CacheError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure means the file cannot be trusted
        raise CacheError(f"{path}: unreadable ({type(err).__name__})") from None


def set_aside(path: Path) -> Path:
    """Move a damaged `path` (and its checksum) to `<its folder>/.quarantine/`; return where."""
    moved = move_aside(path, path.parent)
    if _digest_path(path).exists():
        move_aside(_digest_path(path), path.parent)
    return moved


def verified_ok(path: Path) -> bool:
    """`path` exists and matches its checksum; a file from before checksums has none, and then
    only loading it with torch can tell."""
    if not path.is_file():
        return False
    digest = _digest_path(path)
    try:
        if digest.exists():  # written after a whole file: a match is enough, no need to load
            return digest.read_text().strip() == _sha256(path)
        load_verified(path)
    except (OSError, CacheError):
        return False
    return True


# --- training checkpoints: last.pt, and prev.pt to fall back on ------------------------------


def save_checkpoint(path: str | os.PathLike[str], blob: dict[str, Any]) -> None:
    """Write a training checkpoint atomically, with its SHA-256 beside it; the checkpoint it
    replaces is kept as `prev.pt` (a damaged `last.pt` falls back to it)."""
    path = Path(path)
    prev = _previous(path)
    if path.exists():
        _digest_path(prev).unlink(missing_ok=True)
        os.replace(path, prev)
        if _digest_path(path).exists():
            os.replace(_digest_path(path), _digest_path(prev))
    save_verified(path, blob)


def load_checkpoint(
    path: str | os.PathLike[str], accept: Callable[[dict[str, Any]], T] | None = None
) -> T | dict[str, Any] | None:
    """The newest intact training checkpoint: `last.pt`, else `prev.pt`, else None (train from
    the start). A damaged one, or one that `accept` (which applies it to the model and
    optimiser) rejects by raising, is moved to `<folder>/.quarantine/` with a warning in the
    log, and the next is tried. With `accept`, returns what it returned."""
    path = Path(path)
    for candidate in (path, _previous(path)):
        if not candidate.exists():
            continue
        try:
            blob = load_verified(candidate)
            if not isinstance(blob, dict):
                raise CacheError(f"holds a {type(blob).__name__}, not a checkpoint")
            return blob if accept is None else accept(blob)
        except Exception as err:  # noqa: BLE001 - any failure means the file cannot be trusted
            moved = set_aside(candidate)
            why = str(err).splitlines()[0] if str(err) else ""
            log.warning(
                "%s: damaged checkpoint (%s: %s), moved to %s; falling back to an earlier one",
                candidate,
                type(err).__name__,
                why.removeprefix(f"{candidate}: "),
                moved,
            )
    return None
