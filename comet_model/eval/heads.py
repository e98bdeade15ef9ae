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
from collections.abc import Sequence

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
    "fit_heads",
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


class _HeadStack:
    """S heads of one set trained side by side: their layers stacked on a leading source axis,
    the same arithmetic as :class:`Head` (codes centred and scaled per source)."""

    def __init__(self, heads: Sequence[Head], items, num_classes: int, background_class) -> None:
        codes = torch.stack([c for c, _, _ in items])  # (S, N, T, D)
        device = codes.device
        labels = [y.to(device) for _, y, _ in items]
        masks = [None if k is None else k.to(device) for _, _, k in items]
        every = torch.ones(codes.shape[1:3], dtype=torch.bool, device=device)
        self.clip = heads[0].lin1 is not None
        self.codes = codes
        self.mask = torch.stack([every if k is None else k for k in masks])  # pooled steps
        pairs = zip(labels, masks, strict=True)
        self.valid = torch.stack([_valid(y, k) for y, k in pairs]).float()  # labelled steps
        self.onehot = torch.stack([step_targets(y, num_classes) for y in labels])  # (S,N,T,C)
        self.ids = torch.stack([y if y.ndim == 2 else y.float().argmax(-1) for y in labels])
        self.target = None
        if self.clip:
            pairs = zip(labels, masks, strict=True)
            self.target = torch.stack([clip_labels(y, k, num_classes, background_class)
                                       for y, k in pairs])  # fmt: skip
        self.center = torch.stack([h.center for h in heads])[:, None, None]  # (S, 1, 1, D)
        self.scale = torch.tensor([h.scale for h in heads], device=device)[:, None, None, None]
        self.names = ("step", "lin1", "lin2") if self.clip else ("step",)
        self.params = {n: _stack(heads, n) for n in self.names}

    def loss(self, idx: Tensor) -> Tensor:
        """The summed losses of the S heads, head s on its items ``idx[s]`` (``idx [S, b]``)."""
        src = torch.arange(idx.shape[0], device=idx.device)[:, None]
        x = (self.codes[src, idx] - self.center) / self.scale  # (S, b, T, D)
        steps = _linear_all(x, *self.params["step"])  # (S, b, T, C)
        v = self.valid[src, idx]
        if not self.clip:
            bce = F.binary_cross_entropy_with_logits(steps, self.onehot[src, idx], reduction="none")
            return _masked_mean(bce.mean(-1), v).sum()
        ids = self.ids[src, idx].clamp_min(0)
        ce = F.cross_entropy(steps.flatten(0, 2), ids.flatten(), reduction="none").view_as(v)
        h = _linear_all(x, *self.params["lin1"])  # (S, b, T, D)
        mask = self.mask[src, idx]
        h = h.masked_fill(~mask[..., None], torch.finfo(h.dtype).min)
        pooled = torch.where(mask.any(2)[..., None], h.amax(2), 0.0)  # (S, b, D)
        logits = _linear_all(pooled, *self.params["lin2"])  # (S, b, C)
        t = self.target[src, idx]  # type: ignore[index]
        clip_ce = F.cross_entropy(logits.flatten(0, 1), t.flatten().clamp_min(0),
                                  reduction="none").view_as(t)  # fmt: skip
        return (_masked_mean(ce, v) + _masked_mean(clip_ce, (t >= 0).float())).sum()

    def write_back(self, heads: Sequence[Head]) -> None:
        """Copy the trained stacked layers into the per-source heads."""
        with torch.no_grad():
            for s, head in enumerate(heads):
                for n, (w, b) in self.params.items():
                    getattr(head, n).weight.copy_(w[s])
                    getattr(head, n).bias.copy_(b[s])


def _stack(heads: Sequence[Head], name: str) -> tuple[nn.Parameter, nn.Parameter]:
    """The weights ``[S, out, in]`` and biases ``[S, out]`` of layer ``name`` of ``heads``."""
    layers = [getattr(h, name) for h in heads]
    weight = torch.stack([lin.weight.detach() for lin in layers])
    bias = torch.stack([lin.bias.detach() for lin in layers])
    return nn.Parameter(weight), nn.Parameter(bias)


def _linear_all(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """``x [S, ..., in]`` through the S layers ``w [S, out, in]``, ``b [S, out]``."""
    flat = x.reshape(x.shape[0], -1, x.shape[-1])  # (S, n, in)
    out = torch.baddbmm(b[:, None], flat, w.transpose(1, 2))  # (S, n, out)
    return out.reshape(*x.shape[:-1], w.shape[1])


def _masked_mean(values: Tensor, weights: Tensor) -> Tensor:
    """Per source: the mean of ``values [S, ...]`` over the entries ``weights`` (0/1) keep."""
    dims = tuple(range(1, values.ndim))
    return (values * weights).sum(dims) / weights.sum(dims).clamp_min(1.0)


def fit_heads(
    items: Sequence[tuple[Tensor, Tensor, Tensor | None]],
    *,
    clip: bool,
    num_classes: int,
    background_class: int | None = None,
    epochs: int,
    lr: float,
    batch_size: int,
    generators: Sequence[torch.Generator],
) -> list[Head]:
    """:func:`fit_head` for S source modalities of one set at once (``items``: their ``(codes
    [N, T, D], labels, mask)``, one generator each): the heads are initialised from their own
    generators exactly as :func:`fit_head` does and trained side by side as one batched model
    (the sum of their losses; every head keeps its own parameters, Adam moments and shuffle from
    its own generator, so a head's result does not depend on the others). A batch without a
    labelled step of a source adds 0 to that head's loss. Items of different lengths are fitted
    one by one."""
    kw = {"clip": clip, "num_classes": num_classes, "background_class": background_class}
    if len({len(c) for c, _, _ in items}) > 1 or len(items) <= 1:
        return [fit_head(c, y, mask=k, generator=g, epochs=epochs, lr=lr, batch_size=batch_size,
                         **kw) for (c, y, k), g in zip(items, generators, strict=True)]  # fmt: skip
    device = items[0][0].device
    heads = [Head(c, None if k is None else k.to(device), num_classes, clip, g)
             for (c, _, k), g in zip(items, generators, strict=True)]  # fmt: skip
    stack = _HeadStack(heads, items, num_classes, background_class)
    opt = torch.optim.Adam([p for pair in stack.params.values() for p in pair], lr=lr,
                           foreach=True)  # fmt: skip
    n = stack.codes.shape[1]
    with torch.enable_grad():
        for _ in range(epochs):
            perms = torch.stack([torch.randperm(n, generator=g) for g in generators])  # (S, n)
            for idx in perms.split(batch_size, dim=1):
                loss = stack.loss(idx.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    stack.write_back(heads)
    return heads
