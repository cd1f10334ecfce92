"""The frozen features a pre-train stores for its fine-tunes, one file per kept epoch.

At a kept pre-train epoch the encoder (and projector) snapshot is loaded back and the whole
training subset and test set are encoded once; the file also holds the labels, the subset's
indices, the kNN monitor's accuracy and, for the 2-FC head, the projection head's first
block, the start of the fine-tune MLP. Fine-tunes then train heads on these tensors only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ltsweep.augment import Normalize
from ltsweep.data.base import Dataset
from ltsweep.device import Speed
from ltsweep.knn import knn_accuracy
from ltsweep.train.inference import forward_eval
from ltsweep.train.selfsup.base import PretrainSettings, SSLMethod
from ltsweep.train.selfsup.loop import load_snapshot


def snapshot_features(
    method: SSLMethod,
    folder: Path,
    epoch: int,
    data: Dataset,
    index: np.ndarray,
    settings: PretrainSettings,
    device: torch.device,
    speed: Speed | bool,
    dtype: str,
) -> dict[str, torch.Tensor]:
    """The tensors of the feature file of pre-train epoch `epoch` (snapshots read from `folder`)."""
    method.to(device)
    load_snapshot(folder, method, epoch, device)
    normalize = Normalize(data.mean, data.std, device)
    test_index = np.arange(len(data.test))
    train_f = forward_eval(method.encoder, data.train, index, normalize, device, speed)
    test_f = forward_eval(method.encoder, data.test, test_index, normalize, device, speed)
    train_labels = torch.as_tensor(data.train.labels[index])
    test_labels = torch.as_tensor(data.test.labels)
    knn = knn_accuracy(
        train_f,
        train_labels,
        test_f,
        test_labels,
        data.num_classes,
        settings.knn_k,
        settings.knn_temperature,
    )
    tensors = {
        "train": train_f.to(getattr(torch, dtype)),
        "test": test_f.to(getattr(torch, dtype)),
        "train_labels": train_labels,
        "test_labels": test_labels,
        "train_index": torch.as_tensor(index),
        "knn_acc": torch.tensor(knn),
    }
    if settings.finetune.head == "mlp":
        tensors |= {f"head.{k}": v.cpu() for k, v in method.head_init().items()}
    return tensors
