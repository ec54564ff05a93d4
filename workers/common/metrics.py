"""The retrieval metrics EmbedHub reports, by name; computed in ``workers.ml.metrics``."""

# Our names → ir-measures measure strings (kept as strings so that importing this module does
# not import ir_measures). Order is the order shown on pages.
METRICS: dict[str, str] = {
    "ndcg@1": "nDCG@1",
    "ndcg@3": "nDCG@3",
    "ndcg@5": "nDCG@5",
    "ndcg@10": "nDCG@10",
    "ndcg@100": "nDCG@100",
    "mrr@10": "RR@10",
    "recall@1": "R@1",
    "recall@5": "R@5",
    "recall@10": "R@10",
    "recall@100": "R@100",
    "map@100": "AP@100",
    "p@1": "P@1",
    "p@10": "P@10",
}
