"""What a GPU run enforces that the meta device does not: dtype agreement at every matmul, bf16 autocast, one device.

Meta tensors carry shapes and dtypes but no data, and their kernels skip the dtype checks CUDA makes (a bf16
weight times a float32 input "works" on meta). `MetaGuard` puts them back at the torch-function level:

- `autocast=True` emulates CUDA's bf16 autocast (what accelerate's mixed_precision=bf16 wraps the forward in):
  matmuls, convolutions and attention run in bf16 whatever their inputs, norms / softmax / losses in float32.
- `autocast=False` (code that runs outside autocast): a matmul whose floating inputs differ in dtype raises
  `PlacementError`, as CUDA's "mat1 and mat2 must have the same dtype" would.
- any op whose tensors sit on different devices (a CPU tensor reaching the meta model) raises `PlacementError`.
- attention runs the fused memory-efficient kernel (as on a GPU), not the math fallback that would save the
  full attention matrix.
- `.item()` / `float()` / `bool()` of a meta tensor (logged metrics, data-dependent checks) give NaN / True:
  there is no value to read, and the step goes on.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch.overrides import TorchFunctionMode

LOW_PRECISION = {
    F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d,
    torch.matmul, torch.mm, torch.bmm, torch.baddbmm, torch.addmm, torch.addbmm, torch.Tensor.matmul,
    torch.Tensor.__matmul__, F.scaled_dot_product_attention,
}
FULL_PRECISION = {F.layer_norm, F.group_norm, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
                  torch.Tensor.softmax, F.mse_loss, F.rms_norm}
NO_VALUE = {torch.Tensor.item: float("nan"), torch.Tensor.__float__: float("nan"), torch.Tensor.__bool__: True}


class PlacementError(RuntimeError):
    """A tensor on the wrong device or in the wrong dtype: what the first GPU step would raise."""


def _tensors(args, kwargs) -> list[torch.Tensor]:
    flat = [*args, *(kwargs or {}).values()]
    out = []
    for a in flat:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out += [t for t in a if isinstance(t, torch.Tensor)]
    return out


def _cast(value, dtype: torch.dtype):
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
        return value.to(dtype)
    return value


class MetaGuard(TorchFunctionMode):
    def __init__(self, autocast: bool, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.autocast, self.dtype = autocast, dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in NO_VALUE and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return NO_VALUE[func]
        if func in LOW_PRECISION or func in FULL_PRECISION:
            tensors = _tensors(args, kwargs)
            devices = {t.device.type for t in tensors if t.dim() > 0}
            if len(devices) > 1:
                raise PlacementError(f"{_name(func)}: tensors on {sorted(devices)}: every input must be on the "
                                     f"model's device {shapes(tensors)}")
            if func in LOW_PRECISION:
                if self.autocast:
                    args = tuple(_cast(a, self.dtype) for a in args)
                    kwargs = {k: _cast(v, self.dtype) for k, v in kwargs.items()}
                else:
                    dtypes = {t.dtype for t in tensors if t.is_floating_point()}
                    if len(dtypes) > 1:
                        raise PlacementError(f"{_name(func)} outside autocast with inputs in {sorted(map(str, dtypes))} "
                                             f"{shapes(tensors)}: cast at the boundary or run under autocast")
            elif self.autocast:
                args = tuple(_cast(a, torch.float32) for a in args)
                kwargs = {k: _cast(v, torch.float32) for k, v in kwargs.items()}
        if func is F.scaled_dot_product_attention and (args[0] if args else kwargs["query"]).is_meta:
            return _fused_attention(*args, **kwargs)
        return func(*args, **kwargs)


def _fused_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """SDPA as a GPU runs it: the fused memory-efficient kernel saves q, k, v, out and the log-sum-exp for backward,
    where the meta device's math fallback would save the whole [heads, n, n] attention matrix."""
    if attn_mask is not None or dropout_p or enable_gqa:
        return F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                                              enable_gqa=enable_gqa)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    return torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, None, grad, 0.0, is_causal,
                                                                  scale=scale)[0]


def _name(func) -> str:
    return getattr(func, "__name__", str(func))


def shapes(tensors: list[torch.Tensor]) -> str:
    return "(" + ", ".join(f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} {t.device.type}" for t in tensors) + ")"


@contextmanager
def guarded(autocast: bool) -> Iterator[MetaGuard]:
    """MetaGuard, also around gradient checkpointing's recompute.

    The autograd engine runs the recompute with no torch-function mode active (CUDA autocast, by contrast, is
    restored by checkpoint itself), so for the duration of the dry step `torch.utils.checkpoint.checkpoint` is
    called with a `context_fn` whose recompute context is the same guard."""
    guard = MetaGuard(autocast=autocast)
    original = torch.utils.checkpoint.checkpoint
    context = lambda: (nullcontext(), MetaGuard(autocast=autocast))  # noqa: E731
    torch.utils.checkpoint.checkpoint = functools.partial(original, context_fn=context)
    try:
        with guard:
            yield guard
    finally:
        torch.utils.checkpoint.checkpoint = original
