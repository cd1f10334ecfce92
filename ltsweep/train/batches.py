"""Where a training step reads its images: the subset kept on the device, or the host.

A training step that copies its batch from the host waits for the copy (and, for pageable
memory, for the whole queue): on a GPU every blocking host-to-device copy of a step costs more
than the small kernels around it. A data set held in memory that fits (CIFAR's 50,000 uint8
images of 3 x 32 x 32 are 150 MB; a long-tailed subset less) is copied to the GPU once, for
the unit's life, and each batch is gathered there by indexing with positions that are
themselves copied once per epoch: a step then copies nothing. Anything else (Clothing1M's
lazily decoded files, or a set larger than the share of GPU memory allowed) is read from the
host batch by batch, through pinned memory; on the CPU nothing moves at all. Both paths give
the same uint8 batch. A set decoded on demand (`prefetch = True`: Clothing1M) reads the next
batch in a background thread while the current step runs, when the loop names it (`then`).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from ltsweep.data.base import ImageSet
from ltsweep.device import to_device

#: the most GPU memory a resident training set may take, and its share of the free memory
RESIDENT_MAX_BYTES = 4 << 30
RESIDENT_FREE_SHARE = 0.25


def keeps_on_device(images: ImageSet, index: np.ndarray, device: torch.device) -> bool:
    """Whether the subset `index` of `images` lives on `device` for the unit's life: only on
    a GPU, only for a set held in memory (`ArrayImageSet`), and only when it takes at most
    RESIDENT_MAX_BYTES and RESIDENT_FREE_SHARE of the free GPU memory."""
    array = getattr(images, "array", None)
    if device.type != "cuda" or not isinstance(array, np.ndarray):
        return False
    need = int(np.prod(array.shape[1:])) * array.itemsize * len(index)
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except (RuntimeError, AssertionError):  # no driver answer: only the fixed cap decides
        free = RESIDENT_MAX_BYTES / RESIDENT_FREE_SHARE
    return need <= min(RESIDENT_MAX_BYTES, RESIDENT_FREE_SHARE * free)


class TrainImages:
    """The uint8 images of a training subset, batch by batch, on `device`.

    Positions are subset positions (0..n-1, `index` maps them to `images`). `order(perm)`
    takes an epoch's permutation (a CPU tensor) and gives it where `batch` wants it: on the
    device when the images are (one copy per epoch), else as it is. `read` is the host
    reader (Clothing1M's views read `view_images`); `resident` None decides by
    `keeps_on_device`.
    """

    _ahead: tuple[np.ndarray, Future] | None = None
    _reader: ThreadPoolExecutor | None = None

    def __init__(
        self,
        images: ImageSet,
        index: np.ndarray,
        device: torch.device,
        read=None,
        resident: bool | None = None,
    ) -> None:
        self.index = np.asarray(index)
        self.device = device
        self.read = read or images.images
        if resident is None:
            resident = keeps_on_device(images, self.index, device)
        self.resident = bool(resident)
        self.prefetch = bool(getattr(images, "prefetch", False)) and not self.resident
        self.data: torch.Tensor | None = None
        if self.resident:
            subset = np.ascontiguousarray(images.array[self.index])  # type: ignore[attr-defined]
            self.data = torch.from_numpy(subset).to(device)  # the one copy of the unit's life

    def __len__(self) -> int:
        return len(self.index)

    def order(self, perm: torch.Tensor) -> torch.Tensor:
        """An epoch's positions where `batch` reads them: on the device if the images are."""
        return perm.to(self.device) if self.resident else perm

    def batch(
        self, positions: torch.Tensor | np.ndarray, then: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor:
        """uint8 (B, 3, H, W) on the device: gathered there (positions from `order`), or read
        on the host and copied (one copy per batch). `then`: the next step's positions, read
        ahead in the background when the set is decoded on demand."""
        if self.data is not None:
            if not isinstance(positions, torch.Tensor) or positions.device != self.data.device:
                positions = torch.as_tensor(positions, device=self.data.device)  # not per step
            return self.data[positions]
        rows = self.index[_host(positions)]
        ahead, self._ahead = self._ahead, None
        if ahead is not None and np.array_equal(ahead[0], rows):
            x = ahead[1].result()
        else:
            x = self.read(rows)
        if then is not None and self.prefetch:
            if self._reader is None:
                self._reader = ThreadPoolExecutor(1, thread_name_prefix="read-ahead")
            following = self.index[_host(then)]
            self._ahead = (following, self._reader.submit(self.read, following))
        return to_device(x, self.device)

    def close(self) -> None:
        """Stop the read-ahead thread (a pending read is awaited)."""
        if self._reader is not None:
            self._reader.shutdown(wait=True)
            self._reader, self._ahead = None, None


def _host(positions: torch.Tensor | np.ndarray) -> np.ndarray:
    return positions.numpy() if isinstance(positions, torch.Tensor) else np.asarray(positions)
