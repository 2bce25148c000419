"""interp-causal: in-context causal tasks, the paper's models, training and reports."""
