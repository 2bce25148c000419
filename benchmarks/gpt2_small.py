"""One phase of the GPT-2-small benchmark, in a process of its own so that its peak memory is its own.

    python benchmarks/gpt2_small.py suite|forward|detect_head [n_sequences]

Builds a randomly initialised GPT-2-small-sized ``transformers`` model (12 layers x 12 heads,
d_model 768, vocabulary 50257; offline, from a config), then times one phase on repeated random
tokens ``[n, 128]`` and prints JSON: ``seconds``, ``peak_mb`` (the process's peak resident memory
above what it held once the model was built) and, for ``detect_head``, the largest difference
between TransformerLens's scores and the suite's.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

import torch


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def main(phase: str, n: int) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    from probes import InductionProbe, PreviousTokenAttention, ProbeSuite, repeated_random_tokens

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(bos_token_id=0, eos_token_id=0)).eval()
    tokens = repeated_random_tokens(n, 64, model.config.vocab_size, torch.Generator().manual_seed(1))
    suite = ProbeSuite([PreviousTokenAttention(), InductionProbe(period=64)])
    out: dict = {}
    if phase == "detect_head":
        suite.run(model, tokens)  # builds the bridge once, as a probe during training would
    base = _status("VmRSS")
    start = time.perf_counter()
    if phase == "forward":
        with torch.no_grad():
            model(tokens)
    elif phase == "suite":
        suite.run(model, tokens)
    elif phase == "detect_head":
        out.update(_detect_head(model, tokens, suite, start))
    else:
        raise ValueError(f"phase: expected suite, forward or detect_head, got {phase!r}")
    out.setdefault("seconds", time.perf_counter() - start)
    out["peak_mb"] = _status("VmHWM") - base
    return out


def _detect_head(model, tokens: torch.Tensor, suite, start: float) -> dict:
    """TransformerLens ``run_with_cache`` + ``detect_head`` per sequence on the model's bridge,
    against one suite pass over the same sequences; the scores must agree."""
    from transformer_lens.head_detector import detect_head

    from probes.adapters import probe_model
    from probes.testing import TokenSeqModel

    bridge = probe_model(model)
    wrapped = TokenSeqModel(bridge, tokens)
    theirs = {name: detect_head(wrapped, list(wrapped.seqs), name, error_measure="mul")
              for name in ("previous_token_head", "duplicate_token_head", "induction_head")}
    seconds = time.perf_counter() - start
    t0 = time.perf_counter()
    result = suite.run(model, tokens)
    ours_seconds = time.perf_counter() - t0
    keys = {"previous_token_head": ("previous_token", "score"), "duplicate_token_head": ("induction", "duplicate_token"),
            "induction_head": ("induction", "prefix_matching")}
    diff = max(abs(result.value(*keys[name], l, h) - float(theirs[name][l, h]))
               for name in theirs for l in range(12) for h in range(12))
    return {"seconds": seconds, "suite_seconds": ours_seconds, "max_abs_diff": diff}


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 256)))
