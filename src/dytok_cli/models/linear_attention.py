"""The Gated DeltaNet layers' short causal convolution in float32 on a CPU.

Without the `causal-conv1d` package, `transformers` runs the depthwise convolution of every
linear-attention layer as `F.conv1d` in the weights' dtype. On a CPU a bfloat16 depthwise `conv1d` is
slow: in a bfloat16 first question on the qwen3.5-0.8b shape the one-token update took about 80% of
decoding (docs/performance.md). These functions are the reference's own computation, the same
`F.conv1d`, run on float32 copies of the inputs and the weights, the result rounded to the input dtype
once. A float32 model gets the reference's exact arithmetic; a bfloat16 one differs in the last bit of
some outputs (the reference rounds the convolution before the activation, these do not).

The seam. With the `kernels` library installed, `transformers` gives every linear-attention layer its
own wrapper module per kernel function (`layer._kernel_funcs`, what `kernels.kernelize` swaps for a hub
kernel); `install` sets the `forward` of one model's `causal_conv1d_fn` and `causal_conv1d_update`
wrappers, as `kernelize` would, and `remove` deletes it again. Nothing global is touched: other models,
the class and the module's functions stay as they are. A wrapper already given a forward (a hub kernel)
is left alone; inputs off the CPU, or packed sequences, go to the wrapper's own forward (the
`causal-conv1d` package where it is installed and supports the device, else the reference). Without
`kernels` there are no wrappers, and the reference runs.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MethodType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

_MARK = "_dytok_float32_conv"


def _conv_float32(hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  padding: int) -> torch.Tensor:
    return F.conv1d(hidden_states.float(), weight.float().unsqueeze(1), None if bias is None else bias.float(),
                    padding=padding, groups=hidden_states.shape[1])


def _activate(out: torch.Tensor, activation: str | None) -> torch.Tensor:
    # On the sliced output, as the reference does: an activation's vectorised loop on a strided view can
    # round differently from one on a contiguous tensor.
    return out if activation is None else ACT2FN[activation](out)


def causal_conv1d_fn(hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     activation: str | None = None, **kwargs: Any) -> torch.Tensor:
    """`transformers`' `causal_conv1d_fn` (the prompt's convolution), in float32."""
    seq_len = hidden_states.shape[-1]
    out = _conv_float32(hidden_states.to(weight.dtype), weight, bias, weight.shape[-1] - 1)[:, :, :seq_len]
    return _activate(out, activation).to(hidden_states.dtype)


def causal_conv1d_update(hidden_states: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None = None, activation: str | None = None) -> torch.Tensor:
    """`transformers`' `causal_conv1d_update` (one step of decoding, the state updated in place), in float32."""
    seq_len, state_len = hidden_states.shape[-1], conv_state.shape[-1]
    joined = torch.cat([conv_state, hidden_states], dim=-1).to(weight.dtype)
    conv_state.copy_(joined[:, :, -state_len:])
    out = _conv_float32(joined, weight, bias, 0)[:, :, -seq_len:]
    return _activate(out, activation).to(hidden_states.dtype)


_REPLACEMENTS: dict[str, Callable[..., torch.Tensor]] = {
    "causal_conv1d_fn": causal_conv1d_fn,
    "causal_conv1d_update": causal_conv1d_update,
}


def _on_cpu(args: tuple, kwargs: dict) -> bool:
    if kwargs.get("seq_idx") is not None or kwargs.get("cu_seqlens") is not None:
        return False
    tensors = [value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor)]
    return bool(tensors) and all(tensor.device.type == "cpu" for tensor in tensors)


def _forward_for(wrapper: nn.Module, replacement: Callable[..., torch.Tensor]) -> MethodType:
    own = type(wrapper).forward

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        if _on_cpu(args, kwargs):
            return replacement(*args, **kwargs)
        return own(wrapper, *args, **kwargs)  # this wrapper's: `transformers`' dispatch, never back here

    setattr(forward, _MARK, True)
    # A bound method, as `kernels.kernelize` sets it: the layer's forward reads `forward.__func__`.
    return MethodType(forward, wrapper)


def _wrappers(model: nn.Module) -> list[tuple[nn.Module, Callable[..., torch.Tensor]]]:
    found = []
    for module in model.modules():
        kernel_funcs = module.__dict__.get("_kernel_funcs")
        if not isinstance(kernel_funcs, dict):
            continue
        for name, replacement in _REPLACEMENTS.items():
            wrapper = kernel_funcs.get(name)
            if isinstance(wrapper, nn.Module):
                found.append((wrapper, replacement))
    return found


def install(model: nn.Module) -> int:
    """Run `model`'s linear-attention convolutions in float32 on a CPU; how many wrappers now do."""
    count = 0
    for wrapper, replacement in _wrappers(model):
        current = wrapper.__dict__.get("forward")
        if current is None:
            wrapper.forward = _forward_for(wrapper, replacement)
        elif not getattr(current, _MARK, False):
            continue  # a hub kernel (`kernelize`) or someone else's: left alone
        count += 1
    return count


def remove(model: nn.Module) -> int:
    """Undo `install`: the wrappers' own forwards again; how many were restored."""
    count = 0
    for wrapper, _ in _wrappers(model):
        if getattr(wrapper.__dict__.get("forward"), _MARK, False):
            del wrapper.forward
            count += 1
    return count
