"""Evaluation core: ranking metrics, non-neural baselines and the P1/P2/P3 protocols.

Pure numpy/torch (no Ray), so it runs the same on a laptop, in a test and inside a Ray task.
See :mod:`.metrics` for the exact ranking conventions (1-based ranks, ties to the lower index).
"""

from .baselines import Baseline, ItemKNN, Popularity, PPRBaseline, RP3beta
from .metrics import (
    hit_rate_at_k,
    mrr,
    ndcg_at_k_single,
    paper_mrr,
    rank_of_targets,
    recall_ndcg_at_k,
    topk_excluding,
)
from .protocols import (
    InteractionSplit,
    LeaveLastSplit,
    carve_validation,
    evaluate_p1,
    evaluate_p2,
    evaluate_pairs,
    format_markdown_table,
    leave_last_split,
)

__all__ = [
    "Baseline",
    "ItemKNN",
    "Popularity",
    "PPRBaseline",
    "RP3beta",
    "hit_rate_at_k",
    "mrr",
    "ndcg_at_k_single",
    "paper_mrr",
    "rank_of_targets",
    "recall_ndcg_at_k",
    "topk_excluding",
    "InteractionSplit",
    "LeaveLastSplit",
    "carve_validation",
    "evaluate_p1",
    "evaluate_p2",
    "evaluate_pairs",
    "format_markdown_table",
    "leave_last_split",
]
