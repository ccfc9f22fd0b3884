"""Qwen3.5, dense (`qwen3_5`) and MoE (`qwen3_5_moe`): Qwen3-VL's processors, prompts (per-patch
"<t seconds>" timestamps in the text), interleaved M-RoPE positions and vision tower without DeepStack,
and a hybrid decoder. The MoE variant differs only in the decoder's MLP, so one adapter serves both.

The hybrid decoder. `text_config.layer_types` marks three of every four layers `linear_attention`
(Gated DeltaNet: a recurrent state and a short causal convolution over the sequence, no softmax, no
keys or values to read) and every fourth `full_attention` (softmax attention with an output gate,
which does not touch q/k). So the prior and the single pass's pruning read the full-attention layers
only (`attention_layers`), and the single pass walks the stack with `HybridDecoder`, which keeps the
linear layers' states at and before the prune layer as they are: they have seen every token.

Without `flash-linear-attention` and `causal-conv1d` the linear layers run `transformers`' PyTorch
reference kernels, correct on any device and much slower; `transformers` says so once on stderr,
which the CLI shows only with `--verbose`. On a CPU the adapter runs those layers' depthwise convolution
in float32 (`linear_attention`: the bfloat16 one is slow there), through the per-layer kernel wrappers
that `transformers` gives each layer when the `kernels` library is installed.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel, ProcessorMixin

from . import linear_attention, register
from .decoder import Decoder, HybridDecoder
from .qwen3_vl import Qwen3VL


@register
class Qwen3_5(Qwen3VL):
    model_type = "qwen3_5"

    def __init__(self, name: str, model: PreTrainedModel, processor: ProcessorMixin) -> None:
        super().__init__(name, model, processor)
        linear_attention.install(model)

    def _layer_types(self) -> list[str]:
        return self.model.config.text_config.layer_types

    def attention_layers(self) -> tuple[int, ...]:
        return tuple(i for i, kind in enumerate(self._layer_types()) if kind == "full_attention")

    def text_attention_modules(self) -> list[nn.Module | None]:
        return [getattr(layer, "self_attn", None) for layer in self.language_model().layers]

    def decoder(self) -> Decoder:
        return HybridDecoder(self.language_model(), self.model.get_output_embeddings())


@register
class Qwen3_5Moe(Qwen3_5):
    """The MoE decoder changes the MLP only: layers, prompts, positions and attention are the dense model's."""

    model_type = "qwen3_5_moe"
