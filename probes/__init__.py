"""Probes that attach to any hooked model: which heads attend to the parent or previous token,
which copy it forward, which are induction heads, and when during training each formed.

    from probes import ProbeSuite, ParentAttention, GraphInductionProbe, chain_parents
    parents = chain_parents(20)
    result = ProbeSuite([ParentAttention(parents), GraphInductionProbe(parents)]).run(model, tokens)
    result.best("parent_attention", "mass")      # Record(probe, layer, head, metric, value, extra)
    result.to_frame()                            # pandas DataFrame

Works on a TransformerLens ``HookedTransformer``, a ``TransformerBridge`` (TransformerLens 3.9
and 4.x), any ``HookedRootModule``, and a plain ``nn.Module`` given a ``site_map``. Knows nothing
of ``interp_causal``: it takes tokens ``[batch, pos]``, a graph as parent lists and reference
distributions as tensors. Importing it loads neither TransformerLens nor scikit-learn.
"""

from probes.attention import ParentAttention, PreviousTokenAttention, pattern_score
from probes.base import ForwardProbe, OwnPassProbe, Probe, ProbeBatch
from probes.behaviour import BehaviourProbe, ICLScore, strategy_predictions
from probes.callback import ProbeCallback
from probes.causal import AblationProbe, PatchingProbe
from probes.copying import LinearCopyingProbe, OVCopyingProbe, copying_score, ov_circuits
from probes.files import read_jsonl
from probes.formation import formation_steps, summarize, track
from probes.gradient import GradientProbe, chi2_mutual_information, compare_to_mi, score_bias_gradient
from probes.interventions import Ablate, Clamp, Patch, attach, intervene, named_pattern
from probes.induction import (
    GraphInductionProbe,
    InductionProbe,
    duplicate_token_pattern,
    induction_pattern,
    repeated_random_tokens,
)
from probes.parents import chain_parents, check_parents, max_parents, parent_matrix
from probes.records import ProbeResult, Record
from probes.monitor import ProbeMonitor
from probes.schedule import Schedule, at, every, log_spaced
from probes.sites import MissingSiteError, ModelDims, find_site, model_dims, offered_sites, run_with_sites
from probes.suite import ProbeSuite, default_suite

__all__ = [
    "Ablate", "AblationProbe", "BehaviourProbe", "Clamp", "Patch", "attach", "intervene", "named_pattern", "ForwardProbe", "GradientProbe", "GraphInductionProbe", "ICLScore", "InductionProbe",
    "LinearCopyingProbe", "MissingSiteError", "ModelDims", "OVCopyingProbe", "OwnPassProbe", "ParentAttention", "PatchingProbe",
    "PreviousTokenAttention", "Probe", "ProbeBatch", "ProbeCallback", "ProbeMonitor", "ProbeResult", "ProbeSuite", "Record",
    "Schedule", "at", "chain_parents", "check_parents", "chi2_mutual_information", "compare_to_mi",
    "copying_score", "default_suite", "duplicate_token_pattern", "every", "find_site", "formation_steps",
    "induction_pattern", "log_spaced", "max_parents", "model_dims", "offered_sites", "ov_circuits",
    "parent_matrix", "pattern_score", "read_jsonl",
    "repeated_random_tokens", "run_with_sites", "score_bias_gradient", "strategy_predictions", "summarize", "track",
]
