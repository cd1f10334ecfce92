"""The kNN monitor: how well frozen features classify, without training anything.

Weighted cosine k-NN (Wu et al. 2018 convention used by SimSiam/lightly): the k most similar
memory-bank features vote with weight exp(sim / temperature). Used every few pre-train epochs
and stored with the pre-train (the paper's Fig. 6b).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def knn_accuracy(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    query: torch.Tensor,
    query_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> float:
    bank = F.normalize(bank.float(), dim=1)
    query = F.normalize(query.float(), dim=1)
    k = min(k, len(bank))
    correct = 0
    for s in range(0, len(query), chunk):
        sim = query[s : s + chunk] @ bank.T
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(top_sim), num_classes, device=bank.device)
        votes.scatter_add_(1, bank_labels[top_idx], torch.exp(top_sim / temperature))
        correct += int((votes.argmax(1) == query_labels[s : s + chunk]).sum())
    return correct / max(1, len(query))
