"""Where a step's images come from (`TrainImages`): a set decoded on demand (Clothing1M) reads
the next batch in the background while a step runs, with as many decoding threads as the
CPUs the process was given; a set held in memory is read as before."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from ltsweep.data.base import ArrayImageSet
from ltsweep.data.clothing1m import FileImageSet, decode_threads
from ltsweep.train.batches import TrainImages

CPU = torch.device("cpu")


class Decoded:
    """An image set decoded on demand: records which thread read which rows."""

    prefetch = True

    def __init__(self, n: int) -> None:
        self.array = None  # not held in memory
        self.labels = np.zeros(n, dtype=np.int64)
        self.reads: list[tuple[list[int], str]] = []

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, index: np.ndarray) -> torch.Tensor:
        self.reads.append((list(map(int, index)), threading.current_thread().name))
        return (
            torch.as_tensor(np.asarray(index), dtype=torch.uint8)
            .view(-1, 1, 1, 1)
            .expand(-1, 3, 2, 2)
        )


def test_the_next_batch_is_read_ahead_once_in_the_background():
    images = Decoded(20)
    index = np.arange(10, 20)
    reader = TrainImages(images, index, CPU)
    assert reader.prefetch and not reader.resident
    perm = torch.tensor([3, 1, 4, 0, 5, 9])
    first = reader.batch(perm[:3], then=perm[3:])
    second = reader.batch(perm[3:])
    assert first[:, 0, 0, 0].tolist() == [13, 11, 14]
    assert second[:, 0, 0, 0].tolist() == [10, 15, 19]
    assert [rows for rows, _ in images.reads] == [[13, 11, 14], [10, 15, 19]]  # once each
    assert images.reads[1][1].startswith("read-ahead")
    reader.close()


def test_a_batch_other_than_the_one_read_ahead_is_read_anew():
    images = Decoded(8)
    reader = TrainImages(images, np.arange(8), CPU)
    reader.batch(np.array([0, 1]), then=np.array([2, 3]))
    got = reader.batch(np.array([4, 5]))
    assert got[:, 0, 0, 0].tolist() == [4, 5]
    reader.close()


def test_a_set_in_memory_is_not_read_ahead_and_gives_the_same_batches():
    array = np.random.default_rng(0).integers(0, 255, (12, 3, 4, 4), dtype=np.uint8)
    images = ArrayImageSet(array, np.zeros(12, dtype=np.int64))
    index = np.array([11, 2, 7, 5, 0])
    reader = TrainImages(images, index, CPU)
    assert not reader.prefetch and not reader.resident  # the CPU: nothing to keep elsewhere
    kept = TrainImages(images, index, CPU, resident=True)
    pos = torch.tensor([4, 0, 2])
    want = torch.from_numpy(array[index[[4, 0, 2]]])
    assert torch.equal(reader.batch(pos, then=pos), want)
    assert torch.equal(kept.batch(kept.order(pos)), want)


@pytest.mark.parametrize(("omp", "want"), [("3", 3), ("1", 1)])
def test_decoding_threads_are_the_cpus_given(monkeypatch, tmp_path, omp, want):
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert decode_threads() == want
    files = FileImageSet([tmp_path / "a.jpg"], np.zeros(1), 32, train=True)
    assert files.workers == want  # decided where it decodes, not where it was loaded
    assert FileImageSet([tmp_path / "a.jpg"], np.zeros(1), 32, True, workers=2).workers == 2
