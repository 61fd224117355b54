"""Mini-batch k-means in torch (Sculley 2010, "Web-scale k-means clustering"), CPU or CUDA.

Used to turn SSL encoder features into discrete speech units (HuBERT-style targets, unit-based
TTS/LLM inputs). Initialization is greedy k-means++ (Arthur & Vassilvitskii 2007) on a random sample;
each step assigns a random mini-batch to its nearest centers and moves every center towards
the mean of its points with a per-center learning rate ``1 / (points seen so far)``. All
randomness comes from one ``torch.Generator`` seeded with ``seed``, so a fit is reproducible on
a given device.

    km = KMeans(num_clusters=100, seed=0).fit(features)      # features [N, D]
    units = km.predict(features)                              # LongTensor [N]
    km.save("kmeans.pt"); km = KMeans.load("kmeans.pt")
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

FORMAT = "speechllm.kmeans"
FORMAT_VERSION = 1


def _as_tensor(features: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(features, np.ndarray) and not features.flags.writeable:
        features = np.array(features)  # kaldiio arrays may be read-only; torch wants writable memory
    x = torch.as_tensor(features)
    if x.dim() != 2:
        raise ValueError(f"k-means features must be [N, D], got shape {list(x.shape)}")
    return x.to(device=device, dtype=torch.float32)


def squared_distances(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``[N, K]`` squared Euclidean distances, via ``|x|^2 - 2 x.c + |c|^2`` (clamped at 0)."""
    d = (x * x).sum(1, keepdim=True) - 2.0 * (x @ centers.T) + (centers * centers).sum(1).unsqueeze(0)
    return d.clamp_min_(0.0)


class KMeans:
    """Mini-batch k-means with k-means++ initialization.

    Args:
        num_clusters: K.
        batch_size: points per mini-batch step.
        max_iter: maximum mini-batch steps.
        tol: stop when the mean squared movement of the centers in a step, relative to the
            mean squared norm of the data, falls below this (after at least ``min_iter`` steps).
        init_size: points sampled for the k-means++ initialization (default ``max(3 K, batch_size)``).
        seed: seed of the one generator behind every random choice.
        device: where the computation runs ("cpu", "cuda", ...).
        chunk_size: points per distance computation in :meth:`predict` (bounds memory).

    Attributes:
        centers: ``FloatTensor[K, D]`` after :meth:`fit` (or :meth:`load`).
        inertia: mean squared distance of the fitted points to their nearest center.
        num_iter: mini-batch steps taken.
    """

    def __init__(
        self,
        num_clusters: int,
        batch_size: int = 10000,
        max_iter: int = 300,
        tol: float = 1e-5,
        min_iter: int = 10,
        init_size: int | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        chunk_size: int = 65536,
    ) -> None:
        if num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        self.num_clusters = int(num_clusters)
        self.batch_size = int(batch_size)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.min_iter = int(min_iter)
        self.init_size = init_size
        self.seed = int(seed)
        self.device = torch.device(device)
        self.chunk_size = int(chunk_size)
        self.centers: torch.Tensor | None = None
        self.inertia: float | None = None
        self.num_iter = 0
        self.meta: dict[str, Any] = {}

    # ------------------------------------------------------------------ fitting

    def _sample(self, n: int, k: int, gen: torch.Generator) -> torch.Tensor:
        """``k`` distinct indices of ``range(n)`` (all of them, shuffled, when ``k >= n``)."""
        return torch.randperm(n, generator=gen)[: min(k, n)]

    def _kmeans_pp(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Greedy k-means++: draw ``2 + log K`` candidates with probability proportional to D(x)^2
        and keep the one that lowers the potential most (as scikit-learn does; plain k-means++
        now and then puts two seeds into one cluster)."""
        k = self.num_clusters
        trials = 2 + int(math.log(k))
        centers = torch.empty(k, x.size(1), device=x.device)
        first = int(torch.randint(x.size(0), (1,), generator=gen))
        centers[0] = x[first]
        closest = squared_distances(x, centers[:1]).squeeze(1)
        for i in range(1, k):
            total = float(closest.sum())
            if total <= 0.0:  # fewer distinct points than clusters: repeat random points
                cand = torch.randint(x.size(0), (trials,), generator=gen)
            else:
                # drawn on the CPU generator, so the draw is the same on every device
                cand = torch.multinomial((closest / total).cpu(), trials, replacement=True, generator=gen)
            cand = cand.to(x.device)
            new_closest = torch.minimum(closest.unsqueeze(0), squared_distances(x[cand], x).clamp_min(0.0))
            best = int(new_closest.sum(1).argmin())
            centers[i] = x[cand[best]]
            closest = new_closest[best]
        return centers

    def fit(self, features: np.ndarray | torch.Tensor) -> "KMeans":
        """Cluster ``features [N, D]`` (N >= K); returns ``self``."""
        x = _as_tensor(features, self.device)
        n, k = x.size(0), self.num_clusters
        if n < k:
            raise ValueError(f"k-means with {k} clusters needs at least {k} points, got {n}")
        gen = torch.Generator().manual_seed(self.seed)
        init_size = self.init_size or max(3 * k, self.batch_size)
        centers = self._kmeans_pp(x[self._sample(n, init_size, gen).to(x.device)], gen)
        counts = torch.zeros(k, device=x.device)
        scale = float((x * x).sum(1).mean()) or 1.0  # makes tol independent of the feature scale
        for step in range(1, self.max_iter + 1):
            batch = x[self._sample(n, self.batch_size, gen).to(x.device)]
            assign = squared_distances(batch, centers).argmin(1)
            batch_counts = torch.bincount(assign, minlength=k).to(x.dtype)
            sums = torch.zeros_like(centers).index_add_(0, assign, batch)
            counts += batch_counts
            hit = batch_counts > 0
            # c <- c + (sum - n_b c) / n_total: the running mean of every point the center has won
            delta = (sums[hit] - batch_counts[hit, None] * centers[hit]) / counts[hit, None]
            centers[hit] += delta
            self.num_iter = step
            shift = float((delta * delta).sum()) / k / scale
            if step >= self.min_iter and shift < self.tol:
                break
        self.centers = centers
        empty = int((counts == 0).sum())
        if empty:
            logger.warning("k-means: %d of %d clusters won no point during training (their k-means++ seeds are kept)",
                           empty, k)
        self.inertia = self.score(x)
        logger.info("k-means: %d clusters of %s points (dim %d), %d mini-batch steps of %d, inertia %.4g",
                    k, f"{n:,}", x.size(1), self.num_iter, min(self.batch_size, n), self.inertia)
        return self

    # ------------------------------------------------------------------ using

    def _check_fitted(self, x: torch.Tensor) -> torch.Tensor:
        if self.centers is None:
            raise RuntimeError("KMeans: call fit() or load() first")
        if x.size(1) != self.centers.size(1):
            raise ValueError(f"features of dimension {x.size(1)}, k-means centers have {self.centers.size(1)}")
        return self.centers.to(x.device)

    @torch.no_grad()
    def predict(self, features: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Index of the nearest center of every row: ``LongTensor[N]`` on the CPU."""
        x = _as_tensor(features, self.device)
        centers = self._check_fitted(x)
        out = [squared_distances(x[i : i + self.chunk_size], centers).argmin(1)
               for i in range(0, x.size(0), self.chunk_size)]
        return torch.cat(out).cpu() if out else torch.zeros(0, dtype=torch.long)

    @torch.no_grad()
    def score(self, features: np.ndarray | torch.Tensor) -> float:
        """Mean squared distance of the rows to their nearest center (the k-means objective per point)."""
        x = _as_tensor(features, self.device)
        centers = self._check_fitted(x)
        total = sum(float(squared_distances(x[i : i + self.chunk_size], centers).min(1).values.sum())
                    for i in range(0, x.size(0), self.chunk_size))
        return total / max(x.size(0), 1)

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> None:
        """Write centers and settings to a small torch file (tmp + rename)."""
        if self.centers is None:
            raise RuntimeError("KMeans: nothing to save before fit()")
        state = {
            "format": FORMAT, "version": FORMAT_VERSION, "centers": self.centers.detach().cpu(),
            "num_clusters": self.num_clusters, "seed": self.seed, "batch_size": self.batch_size,
            "max_iter": self.max_iter, "num_iter": self.num_iter, "inertia": self.inertia, "meta": dict(self.meta),
        }
        tmp = f"{path}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "KMeans":
        """Read what :meth:`save` wrote; ``device`` is where :meth:`predict` will run."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{path}: not a k-means model written by speechllm")
        km = cls(state["num_clusters"], batch_size=state["batch_size"], max_iter=state["max_iter"],
                 seed=state["seed"], device=device)
        km.centers = state["centers"].to(km.device)
        km.num_iter, km.inertia, km.meta = state["num_iter"], state["inertia"], dict(state.get("meta") or {})
        return km
