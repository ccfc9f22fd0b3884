"""The JSON record of one (video, question): the stable contract for scripts (docs/ask.md describes it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .config import Settings
from .types import HEARD, Answer, Plan

TIMING_KEYS = ("decode_s", "vision_s", "prior_s", "prefill_s", "generate_s", "total_s")


def _base(video: str, question: str, settings: Settings, prior_model: str | None) -> dict[str, Any]:
    return {
        "video": video,
        "question": question,
        "answer": None,
        "reasoning": None,  # what the model reasoned before answering (--think, or a model that always reasons)
        "model": settings.model,
        "prior_model": prior_model,
        "method": settings.method.value,
        "ratio": settings.ratio,
        "dtype": None,  # the dtype that ran (`--dtype auto` resolved); null when no model did
        "backend": None,
        "frames": [],
        "visual_tokens": None,
        "tokens_per_frame": None,
        "frame_size": None,  # [width, height] of a frame as the vision tower saw it, in pixels
        "reused_frames": None,  # tower frames that repeat the one before, so not encoded again (--reuse-repeats)
        "reused_prefix_tokens": None,  # prompt tokens an earlier question about the video ran (prefix reuse)
        "subtitles": None,  # with --subtitles/--speech: what is said that went into the prompt (`subtitles_record`)
        "whole": None,  # with --whole: every window's score and those the answer saw (`windowed.Whole.record`)
        "timings": None,
        "error": None,
    }


def plan_record(plan: Plan, settings: Settings, prior_model: str | None) -> dict[str, Any]:
    record = _base(plan.video, plan.question.text, settings, prior_model)
    per_frame = plan.encoded.tokens_per_frame
    frames = []
    for index, (source, timestamp, weight, budget) in enumerate(
        zip(plan.frames.indices, plan.frames.timestamps, plan.weights.tolist(), plan.budgets.tolist())
    ):
        selection = plan.selections[index] if plan.selections is not None else None
        frames.append(
            {
                "index": index,
                "frame": int(source),
                "timestamp": round(float(timestamp), 3),
                "weight": weight,
                "budget": int(budget),
                "dominant": selection.dominant if selection else int(budget),
                "contextual": selection.contextual if selection else 0,
            }
        )
    record.update(
        # The vision features come out in the model's dtype, so they tell what `--dtype auto` chose.
        dtype=str(plan.encoded.features.dtype).removeprefix("torch."),
        backend=plan.frames.backend,
        frames=frames,
        visual_tokens={"full": plan.encoded.num_frames * per_frame, "kept": plan.kept_tokens},
        tokens_per_frame=per_frame,
        frame_size=list(size) if (size := plan.encoded.frame_size) is not None else None,
        reused_frames=plan.encoded.reused_frames,
        reused_prefix_tokens=plan.reused_prefix_tokens,
        subtitles=subtitles_record(plan),
        timings={key: round(plan.timings.get(key, 0.0), 4) for key in TIMING_KEYS},
    )
    return record


def subtitles_record(plan: Plan) -> dict[str, Any] | None:
    """Where the video's lines came from, those the prompt holds (times and text) and the prompt tokens they
    take (beside `visual_tokens`, which budgets count), and why there are none; None without --subtitles or
    --speech."""
    said = plan.transcript
    if said is None:
        return None
    return {
        "source": said.source,
        # With --speech: how the model took the audio track, "native-audio" (it heard it: a model with an audio
        # tower) or "whisper" (a transcript's lines); None when a subtitle file's lines, or nothing, went in.
        "speech": "native-audio" if said.source == HEARD else "whisper" if (said.source or "").startswith("speech (") else None,
        "lines": [{"start": round(line.start, 3), "end": round(line.end, 3), "text": line.text} for line in plan.subtitles],
        "tokens": plan.subtitle_tokens,
        "note": said.note,
        "speech_s": round(plan.timings.get("speech_s", 0.0), 4),  # finding or transcribing them; 0 once done for the video
    }


def frame_ranks(weights: Sequence[float]) -> list[int]:
    """Each frame's rank by prior weight, 1 the heaviest; of equal weights the earlier frame ranks first,
    so uniform weights rank frames in time order."""
    order = sorted(range(len(weights)), key=lambda index: (-weights[index], index))
    ranks = [0] * len(weights)
    for rank, index in enumerate(order, start=1):
        ranks[index] = rank
    return ranks


def inspect_record(plan: Plan, settings: Settings, prior_model: str | None) -> dict[str, Any]:
    """What `dytok inspect --json` prints: the `ask` record without `answer`, each frame with its `rank`.

    Nothing is generated, so `generate_s` stays 0 and `total_s` covers decode, vision and prior, and
    for dytok-fastv (whose prior is its prefill up to the prune layer) `prefill_s`, 0 otherwise.
    """
    record = plan_record(plan, settings, prior_model)
    del record["answer"], record["reasoning"]
    # Ranked from the weights as printed, so a reader of the JSON can reproduce every rank.
    for frame, rank in zip(record["frames"], frame_ranks([frame["weight"] for frame in record["frames"]])):
        frame["rank"] = rank
    timings = record["timings"]
    timings["total_s"] = round(sum(plan.timings.get(key, 0.0) for key in ("decode_s", "vision_s", "prior_s", "prefill_s")), 4)
    return record


def answer_record(answer: Answer, settings: Settings, prior_model: str | None,
                  whole: dict[str, Any] | None = None) -> dict[str, Any]:
    """`whole`: a whole-video answer's windows (`windowed.Whole.record`), its timings beside the answer's."""
    record = plan_record(answer.plan, settings, prior_model)
    record["whole"] = whole
    record["answer"] = answer.text
    record["reasoning"] = answer.reasoning
    record["timings"] = {key: round(answer.timings.get(key, 0.0), 4) for key in TIMING_KEYS}
    return record


def error_record(video: str, question: str, settings: Settings, prior_model: str | None, error: str) -> dict[str, Any]:
    record = _base(video, question, settings, prior_model)
    record["error"] = error
    return record
