"""k-nearest-neighbour classification of frozen features (cosine similarity, weighted vote).

[0] Wu et al., Unsupervised Feature Learning via Non-Parametric Instance Discrimination
    (InstDisc), CVPR 2018: weighted kNN, a neighbour with similarity s votes exp(s / T).
[1] Caron et al., DINO, ICCV 2021, `eval_knn.py`: the same vote, k = 20, T = 0.07.
[2] Paper 002 (SeLa), appendix: weighted kNN with k = 50, sigma = 0.1 (sigma is our T).
[3] Paper 004 (LoGo), supplementary: kNN monitor with k = 20, T = 0.07 (our defaults).

The bank is L2-normalised once; queries are processed in chunks so that only a
``chunk x N`` block of similarities exists at a time. One pass takes the top ``max(k)``
neighbours, so several k cost the same as the largest one.

Certified low-precision search (the default for fp32 features and large banks where the
hardware has a fast 16-bit matmul: CUDA, or a CPU with AVX512-BF16 / AMX). The N similarities of a query
are computed in bf16 (CPU) or fp16 (CUDA), which is about twice as fast, to pick
``C = max(2k, k + 48)`` candidates; their similarities are then recomputed in fp32 and the
top k taken from those. The result is the fp32 one whenever a bound certifies it: each
16-bit similarity is within ``eps = 3u + 2 D 2^-24`` of the true one (u the format's unit
roundoff, for unit vectors), so if the k-th exact similarity among the candidates exceeds
the C-th 16-bit one by more than ``eps`` (plus the fp32 error), no other bank entry can be
in the top k. Queries whose certificate fails are redone in fp32 over the whole bank.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from tagless.errors import TaglessError

# Similarities kept in memory at once when ``chunk_size`` is None (bytes).
_CHUNK_BYTES = 256 * 2**20
# Queries per exact re-ranking block: the gathered B x C x D candidates stay in cache.
_RERANK_BLOCK = 64
# The 16-bit search pays off from about this many bank entries x dims (16k x 512 on a
# 2-core AVX512-BF16 CPU); below it, the candidate top-k and re-ranking cost more.
_CERTIFIED_MIN_WORK = 1 << 23


def _fast_half_dtype(device: torch.device) -> torch.dtype | None:
    """A 16-bit matmul dtype that is faster than fp32 on this device, if any."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            check = getattr(cpu, probe, None)
            if check is not None and check():
                return torch.bfloat16
    return None


def _num_candidates(k: int, n_bank: int) -> int:
    return min(n_bank, max(2 * k, k + 48))


@contextlib.contextmanager
def _full_precision_reductions(device: torch.device):
    """cuBLAS may reduce fp16 products in fp16 unless told not to; the bound needs fp32."""
    if device.type != "cuda":
        yield
        return
    flags = torch.backends.cuda.matmul
    before = flags.allow_fp16_reduced_precision_reduction
    flags.allow_fp16_reduced_precision_reduction = False
    try:
        yield
    finally:
        flags.allow_fp16_reduced_precision_reduction = before


def _certified_topk(q: torch.Tensor, bank: torch.Tensor, bank_half: torch.Tensor, k: int,
                    n_candidates: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (fp32 similarities, indices) of unit queries ``q`` over the unit ``bank``,
    with candidates from the 16-bit ``bank_half`` (see the module docstring)."""
    n_bank, dim = bank.shape
    half = bank_half.dtype
    unit = 2.0**-8 if half == torch.bfloat16 else 2.0**-11
    eps = 3 * unit + 2 * dim * 2.0**-24  # 16-bit similarity error bound (unit vectors)
    fp32_err = dim * 2.0**-24  # fp32 similarity error bound
    with _full_precision_reductions(q.device):
        approx = q.to(half) @ bank_half.T
    cand_val, cand_idx = approx.topk(n_candidates, dim=1, largest=True, sorted=True)
    del approx
    sims, idx = [], []
    for start in range(0, q.shape[0], _RERANK_BLOCK):
        rows = slice(start, start + _RERANK_BLOCK)
        cand = cand_idx[rows]
        vectors = bank.index_select(0, cand.reshape(-1)).view(*cand.shape, dim)
        exact = torch.bmm(vectors, q[rows, :, None])[..., 0]  # B x C similarities in fp32
        val, pos = exact.topk(k, dim=1, largest=True, sorted=True)
        sims.append(val)
        idx.append(cand.gather(1, pos))
    sims, idx = torch.cat(sims), torch.cat(idx)
    if n_candidates < n_bank:
        certified = sims[:, -1] - fp32_err > cand_val[:, -1].float() + eps
        if not bool(certified.all()):
            redo = (~certified).nonzero()[:, 0]
            sims[redo], idx[redo] = (q[redo] @ bank.T).topk(k, dim=1, largest=True, sorted=True)
    return sims, idx


def _check_features(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TaglessError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise TaglessError(f"{name} must be 2-D (rows x dim), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TaglessError(f"{name} must be floating point, got {x.dtype}")


def _prepare(bank, bank_labels, queries, ks, temperature, num_classes, dtype):
    _check_features("bank", bank)
    _check_features("queries", queries)
    if bank.shape[1] != queries.shape[1]:
        raise TaglessError(f"bank dim {bank.shape[1]} != queries dim {queries.shape[1]}")
    if bank.device != queries.device or bank_labels.device != bank.device:
        raise TaglessError(f"bank, bank_labels and queries must be on one device, got "
                           f"{bank.device}, {bank_labels.device}, {queries.device}")
    if bank_labels.ndim != 1 or bank_labels.shape[0] != bank.shape[0]:
        raise TaglessError(f"bank_labels must have shape ({bank.shape[0]},), got {tuple(bank_labels.shape)}")
    if bank.shape[0] == 0:
        raise TaglessError("the kNN bank is empty")
    if bank_labels.is_floating_point() or bank_labels.is_complex():
        raise TaglessError(f"bank_labels must be integers, got {bank_labels.dtype}")
    if int(bank_labels.min()) < 0:
        raise TaglessError("bank_labels has negative (unlabelled) entries; drop those rows from the bank")
    for k in ks:
        if not 1 <= k <= bank.shape[0]:
            raise TaglessError(f"k={k} must be in [1, bank size {bank.shape[0]}]")
    if temperature <= 0:
        raise TaglessError(f"temperature must be > 0, got {temperature}")
    top = int(bank_labels.max()) + 1
    if num_classes is None:
        num_classes = top
    elif top > num_classes:
        raise TaglessError(f"bank label {top - 1} out of range for num_classes={num_classes}")
    if dtype is None:
        # float64 inputs keep float64 (exact comparisons in tests); everything else is fp32.
        dtype = torch.float64 if bank.dtype == torch.float64 else torch.float32
    return num_classes, dtype


def _as_ks(k) -> tuple[list[int], bool]:
    if isinstance(k, Sequence) and not isinstance(k, str):
        ks = [int(v) for v in k]
        if not ks:
            raise TaglessError("k is an empty sequence")
        return ks, True
    return [int(k)], False


def knn_votes(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    k: int | Sequence[int] = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    weighted: bool = True,
    chunk_size: int | None = None,
    normalize: bool = True,
    dtype: torch.dtype | None = None,
) -> Iterator[tuple[slice, dict[int, torch.Tensor]]]:
    """Yield ``(rows, {k: votes chunk x num_classes})`` over chunks of queries.

    Arguments as in :func:`knn_predict`. ``votes[i, c]`` is the number of the k nearest
    neighbours of query i with label c (``weighted=False``), or the sum over those
    neighbours of ``exp((s - s_max) / T)`` (``weighted=True``), where ``s_max`` is the
    query's largest similarity. Subtracting ``s_max`` only rescales a query's votes (same
    ranking) and keeps ``exp`` finite in fp32 for any T.
    """
    ks, _ = _as_ks(k)
    auto = dtype is None
    num_classes, dtype = _prepare(bank, bank_labels, queries, ks, temperature, num_classes, dtype)
    kmax = max(ks)
    bank = bank.to(dtype)
    if normalize:
        bank = F.normalize(bank, dim=1)
    labels = bank_labels.long()
    n_bank, n_query = bank.shape[0], queries.shape[0]
    # certified 16-bit candidates need unit vectors (the error bound) and an fp32 default
    half = _fast_half_dtype(bank.device) if auto and normalize and dtype == torch.float32 else None
    n_cand = _num_candidates(kmax, n_bank)
    if n_bank < 8 * n_cand or n_bank * bank.shape[1] < _CERTIFIED_MIN_WORK:
        half = None  # too little to prune
    bank_half = bank.to(half) if half is not None else None
    if chunk_size is None:
        per_row = n_bank * (bank.element_size() if half is None else bank_half.element_size())
        chunk_size = _CHUNK_BYTES // per_row
    chunk_size = max(1, min(int(chunk_size), max(n_query, 1)))
    vote_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    for start in range(0, n_query, chunk_size):
        rows = slice(start, min(start + chunk_size, n_query))
        q = queries[rows].to(dtype)
        if normalize:
            q = F.normalize(q, dim=1)
        # topk over one chunk x N block; sorted so the first k columns are the k nearest.
        if half is None:
            sim, idx = (q @ bank.T).topk(kmax, dim=1, largest=True, sorted=True)
        else:
            sim, idx = _certified_topk(q, bank, bank_half, kmax, n_cand)
        neighbour_labels = labels[idx]
        if weighted:
            weights = ((sim.to(vote_dtype) - sim[:, :1].to(vote_dtype)) / temperature).exp_()
        else:
            weights = torch.ones_like(sim, dtype=vote_dtype)
        out = {}
        for kk in ks:
            votes = torch.zeros(q.shape[0], num_classes, dtype=vote_dtype, device=q.device)
            votes.scatter_add_(1, neighbour_labels[:, :kk], weights[:, :kk])
            out[kk] = votes
        yield rows, out


def knn_predict(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    k: int | Sequence[int] = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    weighted: bool = True,
    chunk_size: int | None = None,
    normalize: bool = True,
    dtype: torch.dtype | None = None,
) -> torch.Tensor | dict[int, torch.Tensor]:
    """Predict the class of each query by a vote of its k nearest bank features [0, 1].

    Args:
        bank: N x D features with known labels (any float dtype; on CPU or CUDA).
        bank_labels: N integer labels in [0, num_classes); drop unlabelled (-1) rows first.
        queries: M x D features on the same device.
        k: neighbours per query (paper 004 / DINO: 20; paper 002: 50). A sequence of k
            returns ``{k: predictions}`` computed in one pass with the largest k's top-k.
        temperature: T of the vote weight exp(s / T) (paper 004: 0.07; paper 002: sigma = 0.1).
        num_classes: number of classes (default: ``max(bank_labels) + 1``).
        weighted: True for the exp(s / T) vote; False for a plain majority vote (as
            scikit-learn's ``KNeighborsClassifier(weights='uniform')``).
        chunk_size: queries per chunk (default: about 256 MB of similarities).
        normalize: L2-normalise bank and queries (cosine similarity); False uses raw dot
            products (for features normalised already).
        dtype: None (default): fp32 results (fp64 if the bank is fp64), computed with the
            certified 16-bit candidate search of the module docstring where the device has
            a fast 16-bit matmul; ``torch.float32`` forces plain fp32 similarities;
            ``torch.bfloat16`` / ``torch.float16`` use 16-bit similarities throughout
            (approximate neighbours; fast on CUDA).

    Returns:
        int64 tensor of M predicted labels on the queries' device (or a dict over k).
        Vote ties go to the smallest class index, as ``argmax`` and scikit-learn do.
    """
    ks, many = _as_ks(k)
    preds: dict[int, list[torch.Tensor]] = {kk: [] for kk in ks}
    for _, votes in knn_votes(bank, bank_labels, queries, ks, temperature, num_classes,
                              weighted, chunk_size, normalize, dtype):
        for kk in ks:
            # torch.argmax returns the first maximal index: ties -> smallest class.
            preds[kk].append(votes[kk].argmax(dim=1))
    empty = torch.zeros(0, dtype=torch.long, device=queries.device)
    out = {kk: torch.cat(p) if p else empty for kk, p in preds.items()}
    return out if many else out[ks[0]]


def _rank_of_label(votes: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``target`` in each row of ``votes``, ties broken towards smaller
    class indices (consistent with ``argmax``)."""
    v_t = votes.gather(1, target[:, None])
    cls = torch.arange(votes.shape[1], device=votes.device)
    ahead = (votes > v_t) | ((votes == v_t) & (cls[None, :] < target[:, None]))
    return ahead.sum(dim=1)


def knn_accuracy(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    k: int | Sequence[int] = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    weighted: bool = True,
    chunk_size: int | None = None,
    normalize: bool = True,
    dtype: torch.dtype | None = None,
    topk: Sequence[int] = (1, 5),
) -> dict[str, float] | dict[int, dict[str, float]]:
    """Top-1 / top-5 accuracy (fractions in [0, 1]) of the kNN vote of :func:`knn_predict`.

    ``query_labels`` rows that are negative (unlabelled) are skipped. Top-n counts a query
    as correct when its label is among the n classes with the most votes (ties towards
    smaller class indices, so top-1 agrees with :func:`knn_predict`). Returns
    ``{'top1': ..., 'top5': ...}``, or ``{k: {...}}`` when ``k`` is a sequence.
    """
    if not isinstance(query_labels, torch.Tensor) or query_labels.shape != (queries.shape[0],):
        raise TaglessError(f"query_labels must be a tensor of shape ({queries.shape[0]},)")
    ks, many = _as_ks(k)
    if num_classes is None:
        num_classes = int(max(int(bank_labels.max()), int(query_labels.max()))) + 1
    elif query_labels.numel() and int(query_labels.max()) >= num_classes:
        raise TaglessError(f"query label {int(query_labels.max())} out of range for num_classes={num_classes}")
    correct = {kk: dict.fromkeys(topk, 0) for kk in ks}
    total = 0
    labels = query_labels.to(queries.device).long()
    for rows, votes in knn_votes(bank, bank_labels, queries, ks, temperature, num_classes,
                                 weighted, chunk_size, normalize, dtype):
        target = labels[rows]
        keep = target >= 0
        total += int(keep.sum())
        for kk in ks:
            rank = _rank_of_label(votes[kk][keep], target[keep])
            for n in topk:
                correct[kk][n] += int((rank < n).sum())
    if total == 0:
        raise TaglessError("no labelled queries to score")
    out = {kk: {f"top{n}": correct[kk][n] / total for n in topk} for kk in ks}
    return out if many else out[ks[0]]


def knn_multilabel_scores(
    bank: torch.Tensor,
    bank_targets: torch.Tensor,
    queries: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Per-class scores M x C of each query from its k nearest bank features (cosine).

    ``bank_targets`` is N x C of 1 (positive), 0 (negative) and -1 (unknown). A neighbour with
    similarity s weighs exp((s - s_max) / T) as in :func:`knn_votes`, and the score of class c
    is the weighted share of positives among the neighbours whose label of c is known:
    ``sum_j w_j [y_jc = 1] / sum_j w_j [y_jc != -1]`` (0 when no neighbour knows c). The
    scores rank images per class, so they serve mAP (the multi-label online monitor).
    """
    _check_features("bank", bank)
    _check_features("queries", queries)
    if bank_targets.ndim != 2 or bank_targets.shape[0] != bank.shape[0]:
        raise TaglessError(f"bank_targets must be N x C with N = {bank.shape[0]}, got {tuple(bank_targets.shape)}")
    if bank.shape[1] != queries.shape[1]:
        raise TaglessError(f"bank dim {bank.shape[1]} != queries dim {queries.shape[1]}")
    if not 1 <= k <= bank.shape[0]:
        raise TaglessError(f"k={k} must be in [1, bank size {bank.shape[0]}]")
    if temperature <= 0:
        raise TaglessError(f"temperature must be > 0, got {temperature}")
    bank = F.normalize(bank.float(), dim=1)
    positive = (bank_targets == 1).float()
    known = (bank_targets != -1).float()
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_BYTES // (4 * bank.shape[0]))
    out = []
    for start in range(0, queries.shape[0], chunk_size):
        q = F.normalize(queries[start : start + chunk_size].float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        w = ((sim - sim[:, :1]) / temperature).exp()  # chunk x k
        pos = torch.einsum("mk,mkc->mc", w, positive[idx])
        seen = torch.einsum("mk,mkc->mc", w, known[idx])
        out.append(torch.where(seen > 0, pos / seen.clamp_min(1e-30), torch.zeros_like(pos)))
    return torch.cat(out) if out else queries.new_zeros(0, bank_targets.shape[1])
