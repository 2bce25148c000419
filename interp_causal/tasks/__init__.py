"""In-context causal tasks (docs/science.md §1): graphs, the sampler, the Bayes estimator and baselines."""

from interp_causal.tasks.estimators import (
    baseline_losses,
    bayes,
    count_softmax_floor,
    frequency_softmax,
    cross_entropy,
    match_counts,
    one_parent,
    uniform,
    unigram,
)
from interp_causal.tasks.graph import GRAPH_NAMES, CausalGraph
from interp_causal.tasks.task import InContextTask, TaskBatch

__all__ = [
    "GRAPH_NAMES",
    "CausalGraph",
    "InContextTask",
    "TaskBatch",
    "baseline_losses",
    "bayes",
    "count_softmax_floor",
    "frequency_softmax",
    "cross_entropy",
    "match_counts",
    "one_parent",
    "uniform",
    "unigram",
]
