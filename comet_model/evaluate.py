"""Downstream evaluation of a frozen model's quantised codes (COMET spec section 7).

The CMG/DCID protocols (AVE classification, AVVP localisation, AVE -> AVVP, zero-shot retrieval)
and the paper's codebook usage (Fig. 3), with these fixes and choices: heads train on a training
split and are scored on a separate test split (the original scored its training loader); AVVP
precision and recall are micro-averaged over all test steps (the original averaged per-batch
values); the original AVVP ExpLogLoss is omitted (BCE only); retrieval ties rank pessimistically.
Accuracy, F1, precision, recall and R@K are percentages.

Heads are tiny and deterministic: weights come from an explicit ``torch.Generator`` (no global
RNG use), and codes are centred and divided by one scalar RMS of the training codes first (an
affine map the first layer could learn; it only makes training indifferent to the code scale).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import skip_init

from comet_model.data.streaming import row_chunks, rows_per_chunk
from comet_model.data.tasks import head_tasks, known_steps, step_targets
from comet_model.data.types import DownstreamSets

_QUANTIZE_CHUNK = 2048  # rows per model.quantize call (bounds memory on large sets)
_Quantized = dict[tuple[str, str], tuple[Tensor, Tensor, "Tensor | None"]]


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


def ave_to_avvp_f1(*args: Any, **kwargs: Any) -> dict[str, float]:
    """AVE -> AVVP: :func:`localisation_f1` with AVE training codes and labels of modality A and
    AVVP test codes and labels of modality B, i.e. trained on single-event sequences and scored
    on multi-event ones (the digits world shares every class, so none is dropped)."""
    return localisation_f1(*args, **kwargs)


def pool_sequences(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over valid steps: (N, T, D) -> (N, D); rows without a valid step give zeros."""
    if mask is None:
        return x.mean(1)
    m = mask.to(x.dtype)[..., None]  # (N, T, 1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def ranks_from_similarity(sim: Tensor, tie_tol: float = 1e-6) -> Tensor:
    """Pessimistic 0-based rank [N] of the match j = i in each row of sim [N, N]: the number of
    items scoring >= s_ii - tie_tol, minus one. Ties count as ranked ahead, so a collapsed
    model whose vectors are all identical ranks every match last instead of first."""
    return (sim >= sim.diagonal()[:, None] - tie_tol).sum(1) - 1


def retrieval_recall(
    query: Tensor,
    gallery: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    *,
    query_mask: Tensor | None = None,
    gallery_mask: Tensor | None = None,
    tie_tol: float = 1e-6,
) -> dict[str, float]:
    """Zero-shot retrieval: time-pooled codes [N, T, D], cosine similarity, item i of ``query``
    matches item i of ``gallery``; "r{K}" = % of queries whose match has rank < K."""
    if query.shape[0] != gallery.shape[0]:
        raise ValueError(f"query has {query.shape[0]} items, gallery {gallery.shape[0]}")
    q = F.normalize(pool_sequences(query.float(), query_mask), dim=-1)  # (N, D)
    g = F.normalize(pool_sequences(gallery.float(), gallery_mask), dim=-1)  # (N, D)
    ranks = ranks_from_similarity(q @ g.T, tie_tol)
    return {f"r{k}": 100.0 * float((ranks < k).float().mean()) for k in ks}


def retrieval_both(
    a: Tensor,
    b: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    *,
    names: tuple[str, str] = ("a", "b"),
    mask_a: Tensor | None = None,
    mask_b: Tensor | None = None,
) -> dict[str, float]:
    """Both directions: "{a}->{b}/r{K}", "{b}->{a}/r{K}" and "{a}<->{b}/mean" (mean of all)."""
    ab = retrieval_recall(a, b, ks, query_mask=mask_a, gallery_mask=mask_b)
    ba = retrieval_recall(b, a, ks, query_mask=mask_b, gallery_mask=mask_a)
    out = {f"{names[0]}->{names[1]}/{k}": v for k, v in ab.items()}
    out |= {f"{names[1]}->{names[0]}/{k}": v for k, v in ba.items()}
    out[f"{names[0]}<->{names[1]}/mean"] = sum(out.values()) / len(out)
    return out


def usage_matrix(
    indices: Mapping[str, Tensor], codebook_size: int, masks: Mapping[str, Tensor] | None = None
) -> Tensor:
    """Counts [K, M] int64: how often each code is chosen by each modality (in dict order)."""
    cols = [torch.zeros(codebook_size, dtype=torch.long)]
    for m, idx in indices.items():
        mask = None if masks is None else masks.get(m)
        flat = (idx if mask is None else idx[mask.to(idx.device)]).reshape(-1).long().cpu()
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= codebook_size):
            raise ValueError(f"'{m}' has code indices outside [0, {codebook_size})")
        cols.append(torch.bincount(flat, minlength=codebook_size))
    return torch.stack(cols, 1)[:, 1:]


def perplexity(counts: Tensor) -> float:
    """exp(H(p)) with p = counts / sum and natural log; NaN for an empty histogram."""
    total = float(counts.sum())
    if total == 0:
        return float("nan")
    p = counts[counts > 0].double() / total
    return float(torch.exp(-(p * p.log()).sum()))


def codebook_usage(
    indices: Mapping[str, Tensor], codebook_size: int, masks: Mapping[str, Tensor] | None = None
) -> dict[str, float]:
    """Paper Fig. 3: "codes_0|1|2|3plus" = codes used by 0, 1, 2, 3+ modalities; "perplexity"
    of the pooled code histogram and "perplexity/{m}" of each modality's."""
    u = usage_matrix(indices, codebook_size, masks)  # (K, M)
    n_mod = (u > 0).sum(1)  # (K,) modalities using each code
    out = {f"codes_{j}": float((n_mod == j).sum()) for j in (0, 1, 2)}
    out["codes_3plus"] = float((n_mod >= 3).sum())
    out["perplexity"] = perplexity(u.sum(1))
    out |= {f"perplexity/{m}": perplexity(u[:, j]) for j, m in enumerate(indices)}
    return out


def _seeded(base: int, key: str) -> torch.Generator:
    """A generator per named task, so a result does not depend on which other tasks ran."""
    return torch.Generator().manual_seed((base + zlib.crc32(key.encode())) % 2**63)


@torch.no_grad()
def _quantize(model: Any, sets: DownstreamSets, needed: set[tuple[str, str]]) -> _Quantized:
    """(set, modality) -> (codes (N, T, D), indices (N, T), mask or None), each quantised once
    in eval mode; every module's training flag is restored afterwards."""
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    flags = [mod.training for mod in modules]
    params = list(model.parameters()) if modules else []
    device = params[0].device if params else torch.device("cpu")
    out: _Quantized = {}
    try:
        if modules:
            model.eval()
        for s, m in sorted(needed):
            x, mask = getattr(sets, s).features[m], getattr(sets, s).mask(m)
            mask = None if mask is None else mask.to(device)
            rows = rows_per_chunk(x, _QUANTIZE_CHUNK)  # fewer rows when wide (CMG video maps)
            xs = (xi.to(device) for xi in row_chunks(x, rows))  # chunks of (n, T, d_m)
            ms = [None] * -(-len(x) // rows) if mask is None else mask.split(rows)
            parts = [model.quantize(m, xi, mi) for xi, mi in zip(xs, ms, strict=True)]
            codes = torch.cat([c for c, _ in parts]).float()
            out[(s, m)] = (codes, torch.cat([i for _, i in parts]).long(), mask)
    finally:
        for mod, flag in zip(modules, flags, strict=True):
            mod.training = flag
    return out


def evaluate_downstream(
    model: Any,
    sets: DownstreamSets,
    *,
    modalities: Sequence[str],
    pairs: Sequence[tuple[str, str]] | None = None,
    retrieval_pairs: Sequence[tuple[str, str]] | None = None,
    num_classes: int,
    background_class: int | None,
    head_epochs: int = 30,
    head_lr: float = 3e-2,
    head_batch: int = 256,
    generator: torch.Generator,
) -> dict[str, float]:
    """Every downstream of spec section 7 for a frozen ``model`` that has ``codebook_size`` and
    ``quantize(modality, x, mask) -> (codes [N, T, D], indices [N, T])``.

    ``pairs`` (a, b): heads trained on a, tested on b for AVE, AVVP and AVE -> AVVP (default:
    every ordered pair of ``modalities``); ``retrieval_pairs``: both directions of each
    (default: every unordered pair); usage counts the three test sets for ``modalities``.
    Keys: "ave/{a}->{b}/acc|step_acc", "avvp/{a}->{b}/f1|precision|recall",
    "ave_avvp/{a}->{b}/f1|precision|recall", "retrieval/{a}->{b}/r1|r5|r10",
    "retrieval/{a}<->{b}/mean", "usage/codes_0|1|2|3plus", "usage/perplexity",
    "usage/perplexity/{m}". Each head is trained once per source modality, seeded from one draw
    of ``generator`` and the task name.
    """
    mods = list(modalities)
    pairs = [(a, b) for a in mods for b in mods if a != b] if pairs is None else pairs
    if retrieval_pairs is None:  # every unordered pair, if there is a retrieval set
        retrieval_pairs = [(a, b) for i, a in enumerate(mods) for b in mods[i + 1 :]]
        retrieval_pairs = retrieval_pairs if sets.retrieval is not None else []
    tests = tuple(s for s in ("ave_test", "avvp_test", "retrieval") if s in sets.names())
    needed = {(s, m) for s in tests for m in mods if m in getattr(sets, s).features}
    for a, b in pairs:
        needed |= {("ave_train", a), ("avvp_train", a), ("ave_test", b), ("avvp_test", b)}
    needed |= {("retrieval", m) for pair in retrieval_pairs for m in pair}
    for s, m in sorted(needed):
        if s not in sets.names():
            raise ValueError(f"downstream set '{s}' is absent")
        if m not in getattr(sets, s).features:
            raise ValueError(f"modality '{m}' is not in downstream set '{s}'")
        if s != "retrieval" and getattr(sets, s).labels_for(m) is None:
            raise ValueError(f"downstream set '{s}' has no labels")
    q = _quantize(model, sets, needed)
    base = int(torch.randint(0, 2**62, (1,), generator=generator))
    fit = {"epochs": head_epochs, "lr": head_lr, "batch_size": head_batch}
    tasks = head_tasks(sets, num_classes, background_class)  # label space of each head task
    heads: dict[tuple[str, str], Head] = {}
    for task in tasks:
        space = {"num_classes": task.num_classes, "background_class": task.background_class}
        for a in dict.fromkeys(a for a, _ in pairs):
            c, labels, mk = task.select(q[(task.train_set, a)], sets, "train", a)
            g = _seeded(base, f"{task.name}/{a}")
            heads[(task.name, a)] = fit_head(
                c, labels, clip=task.clip, generator=g, mask=mk, **fit, **space
            )
    out: dict[str, float] = {}
    for a, b in pairs:
        for task in tasks:
            head = heads[(task.name, a)]
            c, labels, mk = task.select(q[(task.test_set, b)], sets, "test", b)
            if task.clip:
                bg = task.background_class
                res = score_classification(head, c, labels, background_class=bg, mask=mk)
            else:
                res = score_localisation(head, c, labels, mask=mk)
            out |= {f"{task.name}/{a}->{b}/{k}": v for k, v in res.items()}
    for a, b in retrieval_pairs:
        (ca, _, ma), (cb, _, mb) = q[("retrieval", a)], q[("retrieval", b)]
        res = retrieval_both(ca, cb, names=(a, b), mask_a=ma, mask_b=mb)
        out |= {f"retrieval/{k}": v for k, v in res.items()}
    indices: dict[str, list[Tensor]] = {}
    for (s, m), (_, idx, mk) in q.items():
        if s in tests and m in mods:
            indices.setdefault(m, []).append(idx.reshape(-1) if mk is None else idx[mk])
    pooled = {m: torch.cat(indices[m]) for m in mods if m in indices}
    usage = codebook_usage(pooled, int(model.codebook_size))
    return out | {f"usage/{k}": v for k, v in usage.items()}
