def _spearman_rows(similarity, gold):
    """Spearman correlation of every row of `similarity` with the matching row of `gold` (ties: average ranks)."""
    import numpy as np
    from scipy.stats import rankdata

    a = rankdata(similarity, axis=-1)
    b = rankdata(gold, axis=-1)
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def paired_bootstrap(seed_items: list[tuple], kind: str, replicates: int, rng) -> dict:
    """Point estimate and 95% percentile interval of a paired difference, x100 (see the module docstring).

    `seed_items`: per seed, ``(values_a, values_b)`` for retrieval (per-query scores, same query order) or
    ``(similarity_a, similarity_b, gold)`` for STS. The seeds are resampled, then the queries / pairs (one draw
    shared by the drawn seeds).
    """
    import numpy as np

    n_seeds, n_items = len(seed_items), len(seed_items[0][0])
    seed_draws = rng.integers(0, n_seeds, size=(replicates, n_seeds))
    if kind == "retrieval":
        diffs = np.stack([np.asarray(a) - np.asarray(b) for a, b in seed_items])  # seeds x queries
        point = diffs.mean()
        item_draws = rng.integers(0, n_items, size=(replicates, n_items))
        per_seed = np.stack([row[item_draws].mean(-1) for row in diffs])  # seeds x replicates
        per_seed_point = diffs.mean(-1)
    else:
        point_rows = [
            _spearman_rows(np.asarray([a, b]), np.asarray([gold, gold])) for a, b, gold in seed_items
        ]  # per seed: [rho_a, rho_b]
        per_seed_point = np.asarray([rho[0] - rho[1] for rho in point_rows])
        point = per_seed_point.mean()
        chunk = 500  # rank arrays of replicates x pairs: in chunks, to bound memory
        per_seed = np.empty((n_seeds, replicates))
        item_draws_all = rng.integers(0, n_items, size=(replicates, n_items))
        for lo in range(0, replicates, chunk):
            draws = item_draws_all[lo : lo + chunk]
            for s, (a, b, gold) in enumerate(seed_items):
                a, b, gold = np.asarray(a), np.asarray(b), np.asarray(gold)
                per_seed[s, lo : lo + chunk] = _spearman_rows(a[draws], gold[draws]) - _spearman_rows(
                    b[draws], gold[draws]
                )
    replicate_values = per_seed.T[np.arange(replicates)[:, None], seed_draws].mean(-1)
    low, high = np.percentile(replicate_values, [2.5, 97.5])
    seed_intervals = [np.percentile(row, [2.5, 97.5]) for row in per_seed]
    return {
        "difference": 100 * float(point),
        "low": 100 * float(low),
        "high": 100 * float(high),
        "per_seed": [
            {"difference": 100 * float(value), "low": 100 * float(ci[0]), "high": 100 * float(ci[1])}
            for value, ci in zip(per_seed_point, seed_intervals, strict=True)
        ],
    }
