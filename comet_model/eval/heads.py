"""Probes on frozen quantised codes: AVE-like classification and AVVP-like localisation heads.

The CMG/DCID protocols with these fixes and choices (COMET spec section 7): heads train on a
training split and are scored on a separate test split (the original scored its training
loader); AVVP precision and recall are micro-averaged over all test steps (the original averaged
per-batch values); the original AVVP ExpLogLoss is omitted (BCE only). Accuracy, F1, precision
and recall are percentages.

Heads are tiny and deterministic: weights come from an explicit ``torch.Generator`` (no global
RNG use), and codes are centred and divided by one scalar RMS of the training codes first (an
affine map the first layer could learn; it only makes training indifferent to the code scale).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import skip_init

from comet_model.data.tasks import known_steps, step_targets

__all__ = [
    "Head",
    "clip_labels",
    "cross_modal_classification",
    "f1_from_predictions",
    "fit_head",
    "localisation_f1",
    "score_classification",
    "score_localisation",
]


def _linear(d_in: int, d_out: int, generator: torch.Generator, device: torch.device) -> nn.Linear:
    """nn.Linear with PyTorch's default U(+-1/sqrt(d_in)) init, drawn from ``generator`` only."""
    layer = skip_init(nn.Linear, d_in, d_out)  # skips the global-RNG default init
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) / math.sqrt(d_in))
    return layer.to(device)


def _valid(labels: Tensor, mask: Tensor | None) -> Tensor:
    """bool [N, T]: labelled (>= 0, or multi-hot) steps inside the mask."""
    known = known_steps(labels)
    return known if mask is None else known & mask


class Head(nn.Module):
    """Probe on frozen codes. ``clip=True``: the AVE head (Linear D->D, max over valid steps,
    Linear D->C; no ReLU, as the original) plus a per-step Linear D->C; ``clip=False``: only the
    per-step Linear D->C (the original AVVP head stacks two Linears without activation, which
    spans the same functions)."""

    def __init__(
        self, codes: Tensor, mask: Tensor | None, num_classes: int, clip: bool, gen: torch.Generator
    ) -> None:
        super().__init__()
        flat = codes.reshape(-1, codes.shape[-1]) if mask is None else codes[mask]  # (S, D)
        self.register_buffer("center", flat.mean(0))
        rms = float((flat - flat.mean(0)).pow(2).mean().sqrt())
        self.scale = rms if rms > 1e-8 else 1.0  # a collapsed codebook has no spread
        d, dev = codes.shape[-1], codes.device
        self.step = _linear(d, num_classes, gen, dev)
        self.lin1 = _linear(d, d, gen, dev) if clip else None
        self.lin2 = _linear(d, num_classes, gen, dev) if clip else None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor | None, Tensor]:
        """x (N, T, D) -> clip logits (N, C) or None, step logits (N, T, C)."""
        x = (x - self.center) / self.scale
        if self.lin1 is None or self.lin2 is None:
            return None, self.step(x)
        h = self.lin1(x)  # (N, T, D)
        if mask is None:
            return self.lin2(h.amax(1)), self.step(x)
        pooled = h.masked_fill(~mask[..., None], torch.finfo(h.dtype).min).amax(1)  # (N, D)
        pooled = torch.where(mask.any(1)[:, None], pooled, 0.0)
        return self.lin2(pooled), self.step(x)


def clip_labels(
    labels: Tensor, mask: Tensor | None, num_classes: int, background_class: int | None
) -> Tensor:
    """Clip class [N] of step labels [N, T]: the most frequent non-background class among valid
    steps (ties -> lowest id); ``background_class`` if there is none; -1 if no step is labelled."""
    valid = _valid(labels, mask)
    counts = (F.one_hot(labels.clamp_min(0), num_classes) * valid[..., None]).sum(1)  # (N, C)
    fallback = torch.full_like(counts[:, 0], -1)
    if background_class is not None:
        counts[:, background_class] = 0
        fallback = torch.where(valid.any(1), background_class, fallback)
    return torch.where(counts.sum(1) > 0, counts.argmax(1), fallback)


def fit_head(
    codes: Tensor,
    labels: Tensor,
    *,
    clip: bool,
    num_classes: int,
    background_class: int | None = None,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    mask: Tensor | None = None,
) -> Head:
    """Train a :class:`Head` with Adam on shuffled mini-batches. ``clip``: cross-entropy on clip
    labels + cross-entropy per step; else BCE-with-logits against one-hot step targets over all
    ``num_classes`` (background column included, as the original AVVP head)."""
    labels = labels.to(codes.device)
    mask = None if mask is None else mask.to(codes.device)
    head = Head(codes, mask, num_classes, clip, generator)
    valid = _valid(labels, mask)  # (N, T)
    target = clip_labels(labels, mask, num_classes, background_class) if clip else None  # (N,)
    onehot = step_targets(labels, num_classes)  # (N, T, C); labels may be multi-hot (N, T, C)
    opt = torch.optim.Adam(head.parameters(), lr=lr, foreach=True)  # fewer tiny kernels
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(len(codes), generator=generator).split(batch_size):
                idx = idx.to(codes.device)
                logits, steps = head(codes[idx], None if mask is None else mask[idx])
                v = valid[idx]
                if not bool(v.any()):  # no labelled step, hence no clip label either
                    continue
                if logits is None or target is None:
                    loss = F.binary_cross_entropy_with_logits(steps[v], onehot[idx][v])
                else:
                    loss = F.cross_entropy(steps[v], labels[idx][v])
                    loss = loss + F.cross_entropy(logits, target[idx], ignore_index=-1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return head


@torch.no_grad()
def score_classification(
    head: Head,
    codes: Tensor,
    labels: Tensor,
    *,
    background_class: int | None,
    mask: Tensor | None = None,
) -> dict[str, float]:
    """{"acc": clip accuracy %, "step_acc": accuracy % over all valid steps incl. background}."""
    labels = labels.to(codes.device)
    mask = None if mask is None else mask.to(codes.device)
    logits, steps = head(codes, mask)
    if logits is None:
        raise ValueError("score_classification needs a head fitted with clip=True")
    target = clip_labels(labels, mask, logits.shape[-1], background_class)
    keep, valid = target >= 0, _valid(labels, mask)
    acc = (logits.argmax(-1)[keep] == target[keep]).float().mean()
    step_acc = (steps.argmax(-1)[valid] == labels[valid]).float().mean()
    return {"acc": 100.0 * float(acc), "step_acc": 100.0 * float(step_acc)}


def f1_from_predictions(pred: Tensor, target: Tensor) -> dict[str, float]:
    """Micro P = TP / #predicted, R = TP / #true, F1 = 2PR / (P + R), in %, over all entries of
    two bool arrays of one shape; each is 0 where its denominator is 0."""
    tp = float((pred & target).sum())
    n_pred, n_true = float(pred.sum()), float(target.sum())
    p = tp / n_pred if n_pred > 0 else 0.0
    r = tp / n_true if n_true > 0 else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"f1": 100.0 * f1, "precision": 100.0 * p, "recall": 100.0 * r}


@torch.no_grad()
def score_localisation(
    head: Head, codes: Tensor, labels: Tensor, *, mask: Tensor | None = None
) -> dict[str, float]:
    """P/R/F1 (%) of sigmoid > 0.5 per step and class, micro over all valid test steps
    (labels: class ids [N, T] or multi-hot [N, T, C])."""
    labels = labels.to(codes.device)
    valid = _valid(labels, None if mask is None else mask.to(codes.device))
    steps = head(codes)[1][valid]  # (S, C)
    target = step_targets(labels, steps.shape[-1])[valid].bool()
    return f1_from_predictions(steps > 0, target)  # sigmoid(z) > 0.5  <=>  z > 0


def cross_modal_classification(
    train_codes: Tensor,
    train_labels: Tensor,
    test_codes: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    background_class: int | None,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    train_mask: Tensor | None = None,
    test_mask: Tensor | None = None,
) -> dict[str, float]:
    """AVE-like cross-modal event classification: a head trained on modality A's codes
    [N, T, D] and step labels [N, T], tested on modality B's. Keys "acc", "step_acc" (%)."""
    kw = {"num_classes": num_classes, "epochs": epochs, "lr": lr, "batch_size": batch_size}
    kw |= {"background_class": background_class, "generator": generator, "mask": train_mask}
    head = fit_head(train_codes, train_labels, clip=True, **kw)
    return score_classification(
        head, test_codes, test_labels, background_class=background_class, mask=test_mask
    )


def localisation_f1(
    train_codes: Tensor,
    train_labels: Tensor,
    test_codes: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    train_mask: Tensor | None = None,
    test_mask: Tensor | None = None,
) -> dict[str, float]:
    """AVVP-like cross-modal per-step multi-label localisation. Keys "f1", "precision",
    "recall" (%), micro-averaged over all valid test steps."""
    kw = {"num_classes": num_classes, "epochs": epochs, "lr": lr, "batch_size": batch_size}
    head = fit_head(
        train_codes, train_labels, clip=False, generator=generator, mask=train_mask, **kw
    )
    return score_localisation(head, test_codes, test_labels, mask=test_mask)
