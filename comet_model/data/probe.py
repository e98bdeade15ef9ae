"""Linear probes on the feature bank: does each modality carry the digit on its own?"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bank import FeatureBank


def softmax_regression(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    num_classes: int,
    *,
    weight_decay: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression (full-batch L-BFGS, L2 penalty) -> (W [d, C], b [C])."""
    g = torch.Generator().manual_seed(seed)
    d = x_train.shape[1]
    w = (0.01 * torch.randn(d, num_classes, generator=g)).requires_grad_()
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x_train @ w + b, y_train) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def probe_accuracy(
    bank: FeatureBank,
    modality: str,
    *,
    include_background: bool = False,
    weight_decay: float = 1e-3,
    seed: int = 0,
    threads: int | None = 1,
) -> float:
    """Test-pool accuracy of a linear probe trained on the train pool of ``modality``.

    Digits 0-9 only unless ``include_background`` (then 11 classes). ``threads``: torch threads
    during the fit, restored afterwards (one thread is many times faster than two on a busy
    2-core machine; None keeps the current setting).
    """
    pool = bank[modality]
    x = pool.tensor()
    y = torch.as_tensor(pool.labels)
    split = torch.as_tensor(pool.split)
    keep = (
        torch.ones_like(y, dtype=torch.bool) if include_background else y != bank.background_class
    )
    train, test = keep & (split == 0), keep & (split == 1)
    num_classes = len(bank.class_names)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        w, b = softmax_regression(
            x[train], y[train], num_classes, weight_decay=weight_decay, seed=seed
        )
    finally:
        torch.set_num_threads(before)
    pred = (x[test] @ w + b).argmax(dim=1)
    return float((pred == y[test]).float().mean())
