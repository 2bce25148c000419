"""The names a user types: graphs, model presets, recipes, experiments, profiles, training forwards.

Torch-free, so that ``interp-causal --help`` answers at once. Each registry keyed by these names
(``models.PRESETS``, ``training.RECIPES``, ``experiments.EXPERIMENTS``) is checked against this
module by ``tests/test_names.py``; ``CausalGraph.by_name`` reads ``GRAPHS`` from here.
"""

GRAPHS = ("chain", "icl", "random", "random-v2", "two-parent", "markov-N")  # markov-N: any order N >= 1
MODELS = ("paper", "paper-reduced", "attn-only", "mlp", "layernorm", "rotary")
RECIPES = ("fast", "paper-sgd", "paper-adamw", "paper-standard", "paper-trees", "stagewise")
EXPERIMENTS = ("chain", "multi-parent", "standard", "many-trees", "gradient", "interventions")
PROFILES = ("quick", "paper", "tiny")
CHAIN_EXPERIMENT_GRAPHS = ("chain", "icl", "random")  # the graphs of Figs. 2 and 6
FORWARDS = ("auto", "structured", "hooked")  # how the trainer computes a batch's logits
BACKENDS = ("hooked", "bridge")  # HookedTransformer (TransformerLens 3) or TransformerBridge
