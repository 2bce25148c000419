"""The names a user types: graphs, model presets, recipes, experiments, profiles, training forwards.

Torch-free, so that ``interp-causal --help`` answers at once. Each registry keyed by these names
(``models.PRESETS``, ``training.RECIPES``, ``experiments.EXPERIMENTS``) is checked against this
module by ``tests/test_names.py``; ``CausalGraph.by_name`` reads ``GRAPHS`` from here.
"""

GRAPHS = ("chain", "icl", "random", "random-v2", "two-parent", "markov-N")  # markov-N: any order N >= 1
MODELS = ("paper", "paper-reduced", "attn-only", "mlp", "layernorm", "rotary")
RECIPES = ("fast", "paper-sgd", "paper-adamw", "paper-standard", "paper-trees", "stagewise", "standard")
# the recipe each model family trains with unless --recipe says otherwise: the paper models take
# AdamW 5e-2, which diverges on standard models (test loss 2076 after 1500 steps, 3 x 4 heads);
# AdamW 1e-2, the paper's Fig. 8 rate, trains them without tuning
DEFAULT_RECIPES = {"paper": "fast", "paper-reduced": "fast", "attn-only": "standard", "mlp": "standard",
                   "layernorm": "standard", "rotary": "standard"}
EXPERIMENTS = ("chain", "multi-parent", "standard", "many-trees", "gradient", "interventions")
PROFILES = ("quick", "paper", "tiny")
CHAIN_EXPERIMENT_GRAPHS = ("chain", "icl", "random")  # the graphs of Figs. 2 and 6
FORWARDS = ("auto", "structured", "hooked")  # how the trainer computes a batch's logits
BACKENDS = ("hooked", "bridge")  # HookedTransformer (TransformerLens 3) or TransformerBridge
ENGINES = ("ray", "local", "stacked")  # how a sweep trains its trials (sweep.trials.run_trials)
