"""Weight memory layout for fast small-batch decoding on a CPU.

A decode step multiplies a handful of rows by every weight matrix of the model, so it streams all the
weights from memory once per token. How fast the CPU BLAS kernels stream a matrix for such skinny
products depends on which of its two dimensions is contiguous: they read it fastest when the *longer*
one is. ``nn.Linear`` keeps its weight as (out, in) rows, right for a matrix that narrows (an MLP's
down projection, in > out); a widening matrix (the q/k/v projection, an MLP's up projection, the LM head,
out > in) reads faster transposed, as (in, out) rows. Measured on the benchmark's AVX2 machine, cold
weights, one row, 2 threads: 1152x384 157 µs as stored vs 105 µs transposed, 8192x384 1120 vs 580 µs,
but 384x1536 138 µs as stored vs 211 µs transposed. :func:`transpose_linear_weights` stores each
widening weight transposed without changing its values, shape or the module: the parameter becomes a
transposed view (``weight.t()`` is contiguous), which ``F.linear`` hands to the matrix multiply as is.
Checkpoint writers save contiguous copies, so nothing on disk changes.
"""
from __future__ import annotations

import torch
from torch import nn


def transpose_linear_weights(model: nn.Module) -> int:
    """Store every widening (``out_features > in_features``) plain floating-point ``nn.Linear`` weight of
    ``model`` transposed in memory, in place (tied weights once, keeping them tied). Narrowing and square
    weights keep their layout; quantized weights (tensor subclasses, integer storage) and subclasses of
    ``nn.Linear`` (bitsandbytes, tensor-parallel layers) are left alone. Returns how many weights changed."""
    changed = 0
    done: set[int] = set()
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if type(module) is not nn.Linear or type(weight) is not nn.Parameter or id(weight) in done:
            continue
        done.add(id(weight))
        data = weight.data
        if type(data) is not torch.Tensor or not data.dtype.is_floating_point or data.dim() != 2:
            continue
        if data.shape[0] <= data.shape[1] or data.t().is_contiguous():
            continue
        weight.data = data.t().contiguous().t()
        changed += 1
    return changed


__all__ = ["transpose_linear_weights"]
