"""Weighted k-nearest-neighbour classification of frozen features (cosine similarity, as in the
self-supervised literature: k = 20, temperature 0.07)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_scores(train_features: torch.Tensor, train_labels: torch.Tensor, query: torch.Tensor, num_classes: int,
               k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Class scores [M, C] of ``query`` [M, D] from the ``k`` most cosine-similar rows of
    ``train_features`` [N, D] (labels [N]), each voting with weight ``exp(similarity / temperature)``."""
    if k < 1 or temperature <= 0:
        raise ValueError(f"kNN needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    bank = F.normalize(train_features.float(), dim=1)
    k = min(k, bank.shape[0])
    scores = []
    for start in range(0, query.shape[0], chunk):
        q = F.normalize(query[start:start + chunk].float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)  # [m, k]
        weights = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, train_labels[idx], weights)
        scores.append(votes)
    return torch.cat(scores)


def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction of rows of ``scores`` [M, C] whose ``k`` highest classes hold the label [M]."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1).float().mean().item()


def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor,
                 num_classes: int, k: int = 20, temperature: float = 0.07) -> dict[str, float]:
    """{"acc": top-1, and "acc_top5" where there are more than 10 classes} of the weighted kNN."""
    scores = knn_scores(train_features, train_labels, query, num_classes, k, temperature)
    out = {"acc": top_k_accuracy(scores, query_labels, 1)}
    if num_classes > 10:
        out["acc_top5"] = top_k_accuracy(scores, query_labels, 5)
    return out
