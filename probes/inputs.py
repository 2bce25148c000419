"""Boundary checks for what probes are given: tokens, distributions, square matrices."""

from __future__ import annotations

import torch


def check_tokens(tokens: object, name: str = "tokens") -> torch.Tensor:
    """Return ``tokens`` as an int64 tensor ``[batch, pos]``; raise naming the argument otherwise."""
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [batch, pos] of token ids, got {type(tokens).__name__}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer token ids, got dtype {tokens.dtype}")
    if tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 1:
        raise ValueError(f"{name}: expected shape [batch, pos] with batch, pos >= 1, got {tuple(tokens.shape)}")
    if tokens.min() < 0:
        raise ValueError(f"{name}: token ids must be >= 0, got min {int(tokens.min())}")
    return tokens.long()


def check_tokens_fit(tokens: torch.Tensor, dims) -> None:
    """Refuse token ids beyond the model's vocabulary and sequences longer than its context, when
    the model says what they are (``ModelDims.d_vocab``, ``n_ctx``): before any forward pass."""
    if dims.d_vocab is not None and int(tokens.max()) >= dims.d_vocab:
        raise ValueError(f"tokens: ids must be < the model's vocabulary size {dims.d_vocab}, got max {int(tokens.max())}")
    if dims.n_ctx is not None and tokens.shape[1] > dims.n_ctx:
        raise ValueError(f"tokens: sequences of length {tokens.shape[1]} exceed the model's context of {dims.n_ctx} positions")


def check_distribution(x: object, name: str, batch: int, vocab: int | None = None) -> torch.Tensor:
    """Return ``x`` as a float tensor ``[batch, vocab]`` whose rows are probability distributions."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [batch, vocab], got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] != batch or (vocab is not None and x.shape[1] != vocab):
        want = f"[{batch}, {vocab if vocab is not None else 'vocab'}]"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    x = x.detach().float()
    if (x < 0).any() or not torch.allclose(x.sum(-1), torch.ones(batch), atol=1e-4):
        raise ValueError(f"{name}: every row must be a probability distribution (non-negative, summing to 1)")
    return x


def check_square(x: object, name: str, size: int) -> torch.Tensor:
    """Return ``x`` as a float tensor ``[size, size]``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [{size}, {size}], got {type(x).__name__}")
    if tuple(x.shape) != (size, size):
        raise ValueError(f"{name}: expected shape [{size}, {size}], got {tuple(x.shape)}")
    return x.detach().float()
