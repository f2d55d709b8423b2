"""Language-fairness measures of the multilingual (pooled) setting: MRC@k and PEER@k.

Both complement the maximum rank distance (:func:`mlir.eval.tasks.language_rank_distance`); the
definitions, sources and where mlir departs from them are in ``docs/evaluation.md``.

* **MRC@k**, mean rank correlation (Yang, Jiang, Baldwin, *Language Bias in Information Retrieval: The
  Nature of the Beast and Mitigation Methods*, MRL 2024, arXiv 2509.06195). The same question asked in
  languages ``a`` and ``b`` over the same multilingual pool should get the same ranking:
  ``RC_i(a, b) = corr(R(q_i^a), R(q_i^b))`` is Spearman's correlation of the two rankings,
  ``RC_i(a) = 1/(L-1) * sum_{b != a} RC_i(a, b)`` over the other languages the question is asked in,
  and ``MRC(a)`` is the mean of ``RC_i(a)`` over the questions of ``a``. Here the rankings are the two
  **top-k lists**: over their union ``U``, a document's rank in a list is its position there, and the
  ``|U| - k`` documents missing from a list share the mid-rank of positions ``k+1 .. |U|`` (Spearman's
  rho with ties = Pearson's correlation of mid-ranks). 1: the same k documents in the same order for
  every language; two disjoint lists give a negative value (-1 for k = 1).
* **PEER@k**, probability of equal expected rank (Yang, Jänich, Mayfield, Lawrie, *Language Fairness in
  Multilingual Information Retrieval*, SIGIR 2024, arXiv 2405.00978; reference implementation
  ``hltcoe/peer_measure``). Per query, the ranks of its relevant documents grouped by document language
  are tested for equal expected rank with the Kruskal-Wallis test; PEER is the test's p-value (1: no
  evidence that one language's relevant documents rank higher than another's; near 0: a language is
  systematically favoured). With ``r_gj`` the rank of relevant document ``j`` of language ``g``,
  ``n_g`` the group sizes, ``N = sum n_g`` and bars for means::

      H = (N - 1) * sum_g n_g (rbar_g - rbar)^2 / sum_g sum_j (r_gj - rbar)^2,   PEER = P(chi2_{G-1} >= H)

  ``G`` is the number of languages with a relevant document. Relevant documents beyond rank ``k`` are
  unretrieved and tied at the mean of positions ``k+1 .. k+U`` (``U`` of them). All relevance here is
  binary, so the paper's weighted sum over relevance levels is the single level "relevant" (weight 1).
  With ONE relevant document per language (XQuAD-R, MLQA-R) every group is a singleton, the two sums
  of squares are equal and ``H = N - 1`` whatever the ranking: PEER is then a constant per ``N``
  (0.440 for 11 languages), or 1 when all are tied. It needs several relevant documents per language.

Both are per query (NaN where undefined) and are averaged like every other metric of the runner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# --------------------------------------------------------------------------------------------- PEER


def kruskal_wallis(values: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """Kruskal-Wallis ``(H, p)`` of ``values`` (already ranks) grouped by ``groups``, ties included.

    The general form ``H = (N - 1) * SS_between / SS_total`` of the ranks, which equals the classic
    ``12 / (N (N + 1)) * sum R_g^2 / n_g - 3 (N + 1)`` with the tie correction when the values are the
    mid-ranks 1..N, and applies unchanged to positions in a longer ranked list (PEER's ranks). ``p`` is
    1.0 when every value is equal, NaN with fewer than two groups.
    """
    from scipy.stats import chi2

    values = np.asarray(values, dtype=np.float64)
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(g.max()) + 1 if g.size else 0
    if n_groups < 2:
        return float("nan"), float("nan")
    mean = values.mean()
    total = float(((values - mean) ** 2).sum())
    if total == 0.0:
        return 0.0, 1.0
    n = np.bincount(g, minlength=n_groups)
    group_mean = np.bincount(g, weights=values, minlength=n_groups) / n
    h = (values.size - 1) * float((n * (group_mean - mean) ** 2).sum()) / total
    return h, float(chi2.sf(h, n_groups - 1))


def _tie_mean_ranks(ranks: np.ndarray, q: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Relevant documents of one query with bit-identical scores share the mean of their ranks.

    The ranking breaks exact ties by pool position, i.e. by language order; identical vectors (the
    same answer string in two languages) are the same rank, not a language preference.
    """
    order = np.lexsort((scores, q))
    qs, ss = q[order], scores[order]
    new = np.ones(order.size, dtype=bool)
    new[1:] = (qs[1:] != qs[:-1]) | (ss[1:] != ss[:-1])
    run = np.cumsum(new) - 1
    mean = np.bincount(run, weights=ranks[order]) / np.bincount(run)
    out = np.empty_like(ranks)
    out[order] = mean[run]
    return out


def peer_at_k(
    ranks: Sequence[np.ndarray],
    rel_lang: Sequence[np.ndarray],
    k: int = 10,
    rel_scores: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Per query, PEER@k of its relevant documents' ranks (see the module doc).

    ``ranks[i]`` are the 1-based ranks of query ``i``'s relevant documents in the full ranking of the
    pool, ``rel_lang[i]`` their languages (any labels) and ``rel_scores[i]``, if given, their scores
    (relevant documents with bit-identical scores share their mean rank). NaN for a query whose
    relevant documents are in fewer than two languages (no parity to test, as the rank distance).
    Vectorised over all queries: per-group sums by ``np.bincount``, one ``chi2.sf`` call.
    """
    from scipy.stats import chi2

    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    n_q = len(ranks)
    out = np.full(n_q, np.nan)
    lens = np.fromiter((np.size(r) for r in ranks), dtype=np.int64, count=n_q)
    if not lens.sum():
        return out
    q = np.repeat(np.arange(n_q), lens)
    r = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1) for x in ranks])
    _, lang = np.unique(np.concatenate([np.asarray(x).reshape(-1) for x in rel_lang]), return_inverse=True)
    if rel_scores is not None:
        s = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1) for x in rel_scores])
        r = _tie_mean_ranks(r, q, s)
    beyond = r > k
    u = np.bincount(q, weights=beyond, minlength=n_q)
    r = np.where(beyond, k + (u[q] + 1.0) / 2.0, r)
    n = np.bincount(q, minlength=n_q).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(q, weights=r, minlength=n_q) / n
        total = np.bincount(q, weights=(r - mean[q]) ** 2, minlength=n_q)
        n_lang = int(lang.max()) + 1
        cell, cell_of = np.unique(q * n_lang + lang, return_inverse=True)  # (query, language) groups
        cell_q = cell // n_lang
        cell_n = np.bincount(cell_of).astype(np.float64)
        cell_mean = np.bincount(cell_of, weights=r) / cell_n
        between = np.bincount(cell_q, weights=cell_n * (cell_mean - mean[cell_q]) ** 2, minlength=n_q)
        groups = np.bincount(cell_q, minlength=n_q)
        h = (n - 1.0) * between / total
    ok = groups >= 2
    all_tied = ok & (total == 0.0)
    out[ok] = chi2.sf(h[ok], groups[ok] - 1)
    out[all_tied] = 1.0
    return out


# ---------------------------------------------------------------------------------------------- MRC


def topk_spearman(top: np.ndarray) -> np.ndarray:
    """Spearman's rho of every pair of top-k lists (rows of ``top``: document ids, best first).

    Over the union ``U`` of two lists, a document's rank is its position in the list, or the mid-rank
    ``(k + 1 + |U|) / 2`` of positions ``k+1 .. |U|`` when it is missing; rho is Pearson's correlation
    of the two rank vectors. Both vectors are permutations of the same mid-ranks, so their means and
    variances are equal and closed-form; only the cross products need the lists. Returns the ``L x L``
    matrix (diagonal 1); two one-element lists holding the same document (no variance) count as 1.
    """
    top = np.asarray(top)
    n, k = top.shape
    if k == 0:
        return np.full((n, n), np.nan)
    pos = np.arange(1, k + 1, dtype=np.float64)
    match = top[:, None, :, None] == top[None, :, None, :]  # [a, b, i, j]: item i of a is item j of b
    found_in_b = match.any(3)  # [a, b, i]
    found_in_a = match.any(2)  # [a, b, j]
    common = found_in_b.sum(2).astype(np.float64)  # |A ∩ B|
    u = 2.0 * k - common
    mid = (k + 1.0 + u) / 2.0
    pos_in_b = (match * pos[None, None, None, :]).sum(3)  # [a, b, i], 0 where missing
    y_of_a = np.where(found_in_b, pos_in_b, mid[:, :, None])
    sxy = (pos[None, None, :] * y_of_a).sum(2) + mid * ((~found_in_a) * pos[None, None, :]).sum(2)
    sxx = float((pos**2).sum()) + (u - k) * mid**2
    center = ((u + 1.0) / 2.0) ** 2
    var = sxx / u - center
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (sxy / u - center) / var
    return np.where(var > 0, rho, 1.0)


def mrc_at_k(tops: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per query language, ``RC_i(a)`` of each of its queries (see the module doc).

    ``tops[a] = (qids, top)``: the parallel query ids of language ``a``'s queries and their top-k
    lists (``[n, k]`` document indices into the SAME pool for every language). A query gets the mean of
    its Spearman correlations with the same query id in every other language that asks it; NaN when no
    other language does. Returns per language an array aligned with its ``qids``.
    """
    langs = list(tops)
    out = {a: np.full(len(tops[a][0]), np.nan) for a in langs}
    rows: dict[object, list[tuple[str, int]]] = {}
    for a in langs:
        for i, qid in enumerate(np.asarray(tops[a][0]).tolist()):
            rows.setdefault(qid, []).append((a, i))
    for members in rows.values():
        if len(members) < 2:
            continue
        rho = topk_spearman(np.stack([tops[a][1][i] for a, i in members]))
        n = len(members)
        per = (rho.sum(1) - np.diag(rho)) / (n - 1)
        for (a, i), v in zip(members, per):
            out[a][i] = v
    return out
