"""The structured path's two-layer model as one compiled kernel (``paper_kernel.c``), on the CPU.

The torch version of :func:`interp_causal.models.structured.last_logits` runs a dozen passes over
``[batch, n, n]`` tensors per training step, each bound by memory. The kernel computes the same
function, the readout included, one sequence at a time, its attention rows staying in L1 through
the forward and the backward pass (the forward stores them for the backward in a reused buffer, or
the backward recomputes them). A batch is split over torch's threads: the library is built with OpenMP and
shares torch's ``libgomp``, or, where the compiler has no OpenMP, over Python threads.
:mod:`interp_causal.compiled` builds and caches it on first use.

Where there is no C compiler, or ``INTERP_CAUSAL_NATIVE=0``, :func:`library` is None and the
structured path stays in torch, the same function to float rounding
(``tests/test_structured.py`` checks both against the hooked model).
"""

from __future__ import annotations

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from interp_causal import compiled
from interp_causal.compiled import ENV_SWITCH  # noqa: F401  (INTERP_CAUSAL_NATIVE=0: stay in torch)

SOURCE = Path(__file__).with_name("paper_kernel.c")
SAVE_MAX_BYTES = 256 * 2**20

_lock = threading.Lock()
_state: dict = {}  # the thread pool and the stored-state buffers; "python_threads": split without OpenMP


def _declare(lib: ctypes.CDLL) -> None:
    i, p = ctypes.c_int, ctypes.c_void_p
    lib.paper_forward.argtypes = [i] * 9 + [p] * 8
    lib.paper_backward.argtypes = [i] * 9 + [p] * 12
    lib.paper_forward_parts.argtypes = [i, p] + [i] * 7 + [p] * 8
    lib.paper_backward_parts.argtypes = [i, p] + [i] * 7 + [p] * 12
    lib.paper_saved_size.argtypes = [i] * 5
    for fn in (lib.paper_forward, lib.paper_backward, lib.paper_forward_parts, lib.paper_backward_parts,
               lib.paper_saved_size, lib.paper_openmp):
        fn.restype = ctypes.c_int


def library() -> ctypes.CDLL | None:
    """The compiled kernel, or None where it cannot be built or ``INTERP_CAUSAL_NATIVE=0``."""
    return compiled.library(SOURCE, _declare)


def openmp() -> bool:
    """Whether the kernel splits a batch over torch's OpenMP threads (else over Python threads)."""
    lib = library()
    return lib is not None and bool(lib.paper_openmp()) and not _state.get("python_threads", False)


def applies(tensors: tuple[torch.Tensor, ...], tokens: torch.Tensor) -> bool:
    """The kernel can run these weights and tokens: float32 and int64 on the CPU, and it is built."""
    return (tokens.device.type == "cpu" and tokens.dtype == torch.int64
            and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and library() is not None)


def _ranges(batch: int) -> list[tuple[int, int]]:
    """Rows ``[b0, b1)`` per thread: torch's thread count, each part at least 64 sequences."""
    parts = max(1, min(torch.get_num_threads(), batch // 64))
    bounds = [batch * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _pool(workers: int) -> ThreadPoolExecutor:
    with _lock:
        pool, size = _state.get("pool"), _state.get("pool_workers", 0)
        if pool is None or size < workers:
            pool = _state["pool"] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="interp-causal-kernel")
            _state["pool_workers"] = workers
        return pool


def _run(name: str, K: int, B: int, ranges: list[tuple[int, int]], args) -> None:
    """``paper_{name}(K, B, b0, b1, *args(part))`` for each range of rows, in parallel: on torch's
    OpenMP threads by one call of ``paper_{name}_parts`` (``args(0)``: its per-part output is the
    first part's pointer into a contiguous block), or on Python threads (ctypes releases the GIL)."""
    lib = library()
    if len(ranges) == 1:
        codes = [getattr(lib, f"paper_{name}")(K, B, *ranges[0], *args(0))]
    elif openmp():
        bounds = (ctypes.c_int * (len(ranges) + 1))(*(b0 for b0, _ in ranges), ranges[-1][1])
        codes = [getattr(lib, f"paper_{name}_parts")(len(ranges), bounds, K, B, *args(0))]
    else:
        call = getattr(lib, f"paper_{name}")
        futures = [_pool(len(ranges)).submit(call, K, B, b0, b1, *args(i)) for i, (b0, b1) in enumerate(ranges)]
        codes = [f.result() for f in futures]
    if any(codes):
        raise MemoryError("interp_causal: the compiled kernel could not allocate its scratch memory")


def _take_buffer(numel: int) -> torch.Tensor:
    """A float32 buffer of ``numel`` elements, reused from an earlier backward pass when one is free."""
    with _lock:
        free = _state.setdefault("buffers", {}).get(numel)
        if free:
            return free.pop()
    return torch.empty(numel)


def _give_buffer(buffer: torch.Tensor) -> None:
    with _lock:
        free = _state.setdefault("buffers", {}).setdefault(buffer.numel(), [])
        if len(free) < 2:
            free.append(buffer)


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


class PaperTwoLayers(torch.autograd.Function):
    """The logits at the last position ``[K, B, S]`` from ``A0`` ``[K, m0, d0, d0]``, ``A1``
    ``[K, m1, w1, w1]``, the readout ``W_U`` ``[K, dm, S]`` and ``b_U`` ``[K, S]`` (``dm = w1 (1 + m1)``)
    and tokens ``[K, B, n]``; differentiable in the weights."""

    @staticmethod
    def forward(ctx, A0: torch.Tensor, A1: torch.Tensor, W_U: torch.Tensor, b_U: torch.Tensor, x: torch.Tensor,
                S: int, T: int) -> torch.Tensor:
        lib = library()
        A0, A1, x = A0.detach().contiguous(), A1.detach().contiguous(), x.contiguous()
        W_U, b_U = W_U.detach().contiguous(), b_U.detach().contiguous()
        K, m0, m1 = A0.shape[0], A0.shape[1], A1.shape[1]
        B, n = x.shape[1:]
        dims = (S, T, n, m0, m1)
        final, logits = torch.empty(K, B, A1.shape[-1] * (1 + m1)), torch.empty(K, B, S)
        # the state the backward pass reads (attention rows and layer 2's values), when there is
        # one: storing it costs less than computing the forward pass again (chain step 2.4 ms
        # against 3.6), in a buffer that the backward pass gives back for the next step (fresh
        # pages' first touch would cost more than the recomputation: K = 20 trees, 43 MB, 72 ms
        # against 65)
        size = K * B * lib.paper_saved_size(*dims)
        train = any(ctx.needs_input_grad[:4]) and size * 4 <= SAVE_MAX_BYTES
        saved = _take_buffer(size) if train else torch.empty(0)
        _run("forward", K, B, _ranges(B), lambda i: (*dims, _ptr(A0), _ptr(A1), _ptr(W_U), _ptr(b_U), _ptr(x),
                                                     _ptr(final), _ptr(logits), _ptr(saved) if train else None))
        ctx.save_for_backward(A0, A1, W_U, b_U, x, final, saved)
        ctx.dims = dims
        return logits

    @staticmethod
    @once_differentiable
    def backward(ctx, dlogits: torch.Tensor):
        A0, A1, W_U, b_U, x, final, saved = ctx.saved_tensors
        S, T, n, m0, m1 = ctx.dims
        K, B = x.shape[:2]
        d0, w1, dm = S + T, A1.shape[-1], final.shape[-1]
        dlogits = dlogits.contiguous()
        ranges = _ranges(B)
        # one block per part (the C parts' layout), each part's sums in double
        parts = len(ranges)
        dA0 = torch.zeros(parts, K, m0, d0, d0, dtype=torch.float64)
        dW_U, db_U = torch.zeros(parts, K, dm, S, dtype=torch.float64), torch.zeros(parts, K, S, dtype=torch.float64)
        dv = torch.empty(K, B, m1, w1)
        # a second backward pass through the same graph (retain_graph) recomputes: the buffer may
        # serve another forward pass by then
        stored = saved.numel() > 0 and not getattr(ctx, "released", False)
        _run("backward", K, B, ranges, lambda i: (*ctx.dims, _ptr(A0), _ptr(A1), _ptr(W_U), _ptr(b_U), _ptr(x),
                                                  _ptr(final), _ptr(dlogits), _ptr(saved) if stored else None,
                                                  _ptr(dA0[i]), _ptr(dW_U[i]), _ptr(db_U[i]), _ptr(dv)))
        if stored:
            ctx.released = True
            _give_buffer(saved)
        hq = final[..., :w1]  # [K, B, w1]
        dA1 = torch.bmm(hq.transpose(1, 2), dv.view(K, B, m1 * w1)).view(K, w1, m1, w1).transpose(1, 2)
        return dA0.sum(0).float(), dA1, dW_U.sum(0).float(), db_U.sum(0).float(), None, None, None
