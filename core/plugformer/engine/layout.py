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

Where PyTorch is built with oneDNN (the x86 and ARM CPU wheels are), :func:`pack_linear_weights` goes
further for batches: it gives every plain ``nn.Linear`` a copy of its weight reordered into oneDNN's
blocked layout for a small batch (the form ``torch.compile``'s CPU backend uses for frozen weights),
and the module computes a product of two or more rows through it whenever no gradient is needed. One
row stays on the plain kernel: a oneDNN call costs about 17 µs more to set up, and for a single row the
transposed layout streams as fast. Measured on the same machine, cold weights, the model's five matrix
shapes together: 1 row 1.17 ms plain (best layout) vs 1.20 ms packed, 2 rows 1.79 vs 1.15 ms, 4 rows 3.7
vs 1.4 ms, 16 rows 3.2-4.5 vs 2.0 ms; a 16-row decode step of the benchmark's GPT-2 took 17.2 ms instead
of 21.2. The packed copy costs as much memory again as the Linear weights.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


def _plain_linears(model: nn.Module) -> Iterator[tuple[nn.Linear, torch.Tensor]]:
    """Each plain ``nn.Linear`` of ``model`` (not a subclass: bitsandbytes, tensor-parallel layers) whose
    weight is a plain floating-point 2-D tensor (not quantized), with that tensor."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if type(module) is not nn.Linear or type(weight) is not nn.Parameter:
            continue
        data = weight.data
        if type(data) is torch.Tensor and data.dtype.is_floating_point and data.dim() == 2:
            yield module, data


def transpose_linear_weights(model: nn.Module) -> int:
    """Store every widening (``out_features > in_features``) plain floating-point ``nn.Linear`` weight of
    ``model`` transposed in memory, in place (tied weights once, keeping them tied). Narrowing and square
    weights keep their layout; quantized weights (tensor subclasses, integer storage) and subclasses of
    ``nn.Linear`` (bitsandbytes, tensor-parallel layers) are left alone. Returns how many weights changed."""
    changed = 0
    for module, data in _plain_linears(model):  # a shared weight, once transposed, is skipped the next time
        if data.shape[0] > data.shape[1] and not data.t().is_contiguous():
            module.weight.data = data.t().contiguous().t()
            changed += 1
    return changed


#: the batch oneDNN lays packed weights out for; a packed weight serves any batch, fastest near this one
PACK_BATCH_HINT = 16


def packing_unavailable() -> str | None:
    """Why this PyTorch cannot pack Linear weights for oneDNN (None when it can)."""
    if not torch.backends.mkldnn.is_available():
        return "this PyTorch build has no oneDNN (mkldnn)"
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")):
        return "this PyTorch has no mkldnn._reorder_linear_weight/_linear_pointwise operators"
    return None


class PackedLinearForward:
    """The ``forward`` of one packed ``nn.Linear``: ``x @ weight.T + bias`` through the weight's oneDNN
    packed copy for two or more rows; the plain ``F.linear`` for one row and wherever the copy does not
    apply (gradients wanted, autocast, another dtype or device). A weight changed in place or replaced
    since packing is packed again."""

    def __init__(self, module: nn.Linear):
        self.module = module
        self._pack()

    def _pack(self) -> None:
        weight = self.module.weight
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), PACK_BATCH_HINT)
        self.version, self.source = weight._version, weight.data_ptr()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        module = self.module
        weight, bias = module.weight, module.bias
        if (x.numel() <= x.shape[-1] or torch.is_grad_enabled() or x.dtype != weight.dtype or x.device.type != "cpu"
                or weight.device.type != "cpu" or torch.is_autocast_enabled("cpu")):
            return nn.functional.linear(x, weight, bias)
        if weight._version != self.version or weight.data_ptr() != self.source:
            self._pack()
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, "none", [], "")


def pack_linear_weights(model: nn.Module) -> int:
    """Make every plain fp32 ``nn.Linear`` of ``model`` on the CPU compute batches through a oneDNN
    packed copy of its weight (:class:`PackedLinearForward`, set as the module's ``forward``): the
    parameters, the state dict and training are untouched. Subclasses of ``nn.Linear`` (bitsandbytes,
    tensor-parallel layers), quantized weights and modules already packed are left alone. Returns how
    many modules it packed; 0 where :func:`packing_unavailable` says why."""
    if packing_unavailable() is not None:
        return 0
    packed = 0
    for module, data in _plain_linears(model):
        if (data.dtype == torch.float32 and data.device.type == "cpu"
                and not isinstance(module.__dict__.get("forward"), PackedLinearForward)):
            module.forward = PackedLinearForward(module)
            packed += 1
    return packed


__all__ = ["PACK_BATCH_HINT", "PackedLinearForward", "pack_linear_weights", "packing_unavailable",
           "transpose_linear_weights"]
