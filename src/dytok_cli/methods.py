"""One strategy per method, found through one registry keyed by `Method`.

A strategy says what its method does: which layers its prior reads, how it plans one (video, question),
and what it hands `generate`. What a method is (whether it compresses, runs a separate prior pass, prunes
inside the prefill) is data, `Method.traits` (`config.py`), which the settings validate with; the
pipeline, bench and CLI ask the traits and the strategy instead of comparing method names.

The math and the model-driving code are imported when a plan is made, not when this module is, so the
settings (and the CLI's usage errors) can consult a strategy without loading torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .config import Method, MethodTraits
from .gpu import clock
from .math.layers import parse_prior_layers, with_attention

if TYPE_CHECKING:
    import torch

    from .math.selectors.base import FrameSelection
    from .models.base import VideoModel
    from .prefill.prefix import PrefixReuse
    from .types import EncodedVideo, Plan, PromptTensors, Question, Visual


@dataclass(frozen=True)
class PlanContext:
    """What a strategy plans with: the loaded models and the layer choices resolved for them."""

    model: VideoModel
    prior: VideoModel  # the answering model itself unless an assistant computes the prior
    ratio: float
    prior_layers: tuple[int, ...] | None  # None: the method reads no prior
    prune_layer: int | None  # None: the method does not prune inside the prefill
    stage: Callable[[str], None]  # told what is happening now, for progress displays
    reuse: PrefixReuse | None = None  # the video's prompt prefix kept for its later questions; None: no reuse
    thinking: bool = False  # the chat template's thinking switch, for every prompt the plan builds


class Strategy:
    method: ClassVar[Method]

    @property
    def traits(self) -> MethodTraits:
        return self.method.traits

    def prior_layers(
        self, spec: str | None, prior_depth: int, prune_layer: int | None, attention: tuple[int, ...] | None = None
    ) -> tuple[int, ...] | None:
        """The prior model's layers the prior reads, among its softmax-attention layers `attention` (None:
        all); a ValueError for a spec that does not fit; None if the method reads no prior."""
        return None

    def prior_model(self, model: str, prior_model: str | None) -> str | None:
        """The model whose attention gives the prior, as the record names it."""
        return (prior_model or model) if self.traits.reads_prior else None

    def plan(self, context: PlanContext, visual: Visual, question: Question, timings: dict[str, float]) -> Plan:
        raise NotImplementedError

    def generation_inputs(self, model: VideoModel, plan: Plan, reuse: PrefixReuse | None = None) -> dict[str, Any]:
        """Keyword arguments for `generate` that carry the plan's visual tokens; with `reuse`, a cache
        that holds the prompt but its last token, the video's prefix taken from an earlier question."""
        if reuse is not None and self.traits.same_tokens_for_every_question:
            from .prefill.prefix import cache_before_last

            prompt = model.prompt_tensors(plan.question, plan.encoded, plan.visual_tokens, plan.kept_index, plan.deepstack,
                                          thinking=plan.thinking)
            cache = cache_before_last(model, prompt, reuse)
            if cache is not None:
                return _handover(model, prompt, cache)
        return model.build_inputs(plan.question, plan.visual_tokens, plan.kept_index, video=plan.encoded,
                                  deepstack=plan.deepstack, thinking=plan.thinking)


def _handover(model: VideoModel, prompt: PromptTensors, cache: Any) -> dict[str, Any]:
    """Keyword arguments for `generate` to go on from `cache`, which holds `prompt` but its last token."""
    import torch

    from .models.decoder import cache_argument

    return {
        "input_ids": prompt.input_ids,
        "attention_mask": torch.ones_like(prompt.input_ids),
        "position_ids": prompt.position_ids,
        **cache_argument(type(model.model).forward, cache),
    }


def stacked_features(encoded: EncodedVideo) -> torch.Tensor:
    """(F, T, D + sum of DeepStack widths): each token's features with its DeepStack features as extra
    channels. Selectors index and merge per channel, so selecting on these keeps and merges every part of
    a token exactly as its main features; `_plan` splits them again."""
    import torch

    return torch.cat([encoded.features, *encoded.deepstack], dim=-1) if encoded.deepstack else encoded.features


def _plan(
    visual: Visual,
    question: Question,
    weights: torch.Tensor,
    budgets: torch.Tensor,
    selections: list[FrameSelection] | None,
    timings: dict[str, float],
    **rest: Any,
) -> Plan:
    """A plan from where each frame's budget went; `selections` (made on `stacked_features`) None keeps
    every token."""
    import dataclasses

    import torch

    from .types import Plan

    encoded = visual.encoded
    if selections is None:
        kept = stacked_features(encoded).flatten(0, 1)
        every = torch.arange(encoded.tokens_per_frame)  # on the host, as every kept index
        kept_index = encoded.kept_index([every] * encoded.num_frames)
    else:
        kept = torch.cat([selection.tokens for selection in selections])
        kept_index = encoded.kept_index([selection.token_index for selection in selections])
    widths = [encoded.features.shape[-1], *(layer.shape[-1] for layer in encoded.deepstack)]
    kept, *deepstack = kept.split(widths, dim=-1)
    if selections is not None and encoded.deepstack:
        selections = [dataclasses.replace(selection, tokens=selection.tokens[:, : widths[0]]) for selection in selections]
    return Plan(
        video=visual.video,
        question=question,
        frames=visual.frames.group_starts(encoded.frames_per_group, encoded.timestamps),
        encoded=encoded,
        weights=weights,
        budgets=budgets,
        selections=selections,
        visual_tokens=torch.cat([kept, encoded.extra]),
        kept_index=kept_index,
        timings=timings,
        deepstack=tuple(deepstack),
        **rest,
    )


class NoCompression(Strategy):
    method = Method.none

    def plan(self, context: PlanContext, visual: Visual, question: Question, timings: dict[str, float]) -> Plan:
        import torch

        from .math.budget import uniform_weights

        encoded = visual.encoded
        timings["prior_s"] = 0.0
        budgets = torch.full((encoded.num_frames,), encoded.tokens_per_frame, dtype=torch.long)  # on the host
        return _plan(visual, question, uniform_weights(encoded.num_frames), budgets, None, timings)


class VisionZip(Strategy):
    """Frame budgets from `weights` (uniform here), VisionZip within each frame."""

    method = Method.visionzip

    def weights(self, context: PlanContext, visual: Visual, question: Question) -> torch.Tensor:
        from .math.budget import uniform_weights

        return uniform_weights(visual.encoded.num_frames)

    def plan(self, context: PlanContext, visual: Visual, question: Question, timings: dict[str, float]) -> Plan:
        from .math.budget import allocate_budgets, total_budget
        from .math.selectors.visionzip import select_video

        started = clock(context.prior.device)
        weights = self.weights(context, visual, question)
        # An assistant's vision pass is part of what the prior costs.
        timings["prior_s"] = timings.pop("prior_vision_s", 0.0) + clock(context.prior.device) - started
        encoded = visual.encoded
        total = total_budget(context.ratio, encoded.num_frames, encoded.tokens_per_frame)
        budgets = allocate_budgets(weights, total, cap=encoded.tokens_per_frame)
        _, selections = select_video(stacked_features(encoded), encoded.attention, encoded.keys, budgets)
        return _plan(visual, question, weights, budgets, selections, timings)


class DyToK(VisionZip):
    """The reference method: frame budgets from a separate prior pass, VisionZip within frames."""

    method = Method.dytok

    def prior_layers(
        self, spec: str | None, prior_depth: int, prune_layer: int | None, attention: tuple[int, ...] | None = None
    ) -> tuple[int, ...]:
        return parse_prior_layers(spec, prior_depth, attention)

    def weights(self, context: PlanContext, visual: Visual, question: Question) -> torch.Tensor:
        from .prefill.prior_pass import keyframe_prior

        context.stage("Computing the keyframe prior")
        return keyframe_prior(context.prior, visual.prior_encoded, question, context.prior_layers, reuse=context.reuse,
                              thinking=context.thinking)


class DyToKFastV(Strategy):
    """DyToK in one prefill: the prior and the pruning happen at layer K of the answer's own pass, so
    the prior costs nothing extra and all of its time is prefill time."""

    method = Method.dytok_fastv

    def prior_layers(
        self, spec: str | None, prior_depth: int, prune_layer: int | None, attention: tuple[int, ...] | None = None
    ) -> tuple[int, ...]:
        # The layers that run on every token anyway; by default all of them (that have softmax attention).
        spec = spec or "all"
        try:
            layers = parse_prior_layers(spec, prune_layer + 1)
        except ValueError:
            raise ValueError(
                f"--prior-layers {spec!r} must lie within 0-{prune_layer} (--prune-layer) for --method dytok-fastv"
            ) from None
        if attention is not None:
            attention = tuple(layer for layer in attention if layer <= prune_layer)
        return with_attention(layers, attention, spec)

    def plan(self, context: PlanContext, visual: Visual, question: Question, timings: dict[str, float]) -> Plan:
        from .math.budget import allocate_budgets, total_budget
        from .math.prior import combine_layers
        from .math.selectors.fastv import select_video
        from .prefill import single_pass

        encoded = visual.encoded
        context.stage(f"Prefilling to layer {context.prune_layer}")
        started = clock(context.model.device)
        probe = single_pass.run_to_prune_layer(
            context.model, encoded, question, context.prune_layer, context.prior_layers, context.reuse, context.thinking
        )
        weights = combine_layers([probe.scores[layer] for layer in context.prior_layers]).cpu()
        total = total_budget(context.ratio, encoded.num_frames, encoded.tokens_per_frame)
        budgets = allocate_budgets(weights, total, cap=encoded.tokens_per_frame)
        selections = select_video(stacked_features(encoded), probe.attention, budgets)
        kept_index = encoded.kept_index([selection.token_index for selection in selections])
        prefill = single_pass.prune(context.model, probe, kept_index)
        timings["prior_s"] = 0.0
        timings["prefill_s"] = clock(context.model.device) - started
        return _plan(visual, question, weights, budgets, selections, timings, prefill=prefill)

    def generation_inputs(self, model: VideoModel, plan: Plan, reuse: PrefixReuse | None = None) -> dict[str, Any]:
        # Its prefix was reused, if at all, up to the prune layer in `plan`.
        from .prefill import single_pass

        return _handover(model, plan.prefill.prompt, single_pass.finish(model, plan.prefill))


_STRATEGIES: dict[Method, Strategy] = {
    strategy.method: strategy for strategy in (NoCompression(), VisionZip(), DyToK(), DyToKFastV())
}


def strategy(method: Method | str) -> Strategy:
    return _STRATEGIES[Method(method)]
