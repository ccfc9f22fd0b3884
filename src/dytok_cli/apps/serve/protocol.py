"""OpenAI's chat-completions shapes, read and written: a request becomes a video URL, a `Question` and the
options a client may set; answers become `chat.completion` objects or `chat.completion.chunk` events.

The video comes as vLLM sends it, a content part `{"type": "video_url", "video_url": {"url": ...}}`, and it
opens the conversation: it belongs to the first user message. DyToK's own options (`method`, `ratio`,
`frames`, `fps`, `ignore_eos`, `max_reasoning_tokens`) ride beside OpenAI's fields, as the `openai`
client's `extra_body` sends them. Reasoning is asked for as vLLM and Qwen's own servers take it,
`chat_template_kwargs: {"enable_thinking": true}`, and comes back apart from the answer, in the message's
(and the stream deltas') `reasoning_content` and `reasoning`, as vLLM returns it (the first is the name
DeepSeek's API and earlier vLLM releases use, the second the one vLLM uses now).
Torch-free: a request is checked before it costs the model anything.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ...config import DEFAULT_QUESTION
from ...types import Question


class ApiError(Exception):
    """An error answered as OpenAI shapes it: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    @property
    def kind(self) -> str:
        if self.status == 401:
            return "authentication_error"
        if self.status == 429:
            return "rate_limit_error"
        if self.status >= 500:
            return "server_error"
        return "invalid_request_error"

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value" if param else None)


@dataclass(frozen=True)
class Options:
    """What the client asked to change, unchecked against the server's maxima (the service clamps)."""

    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    method: str | None = None
    ratio: float | None = None
    frames: int | None = None
    fps: float | None = None
    ignore_eos: bool = False
    think: bool | None = None  # chat_template_kwargs.enable_thinking; None: the server's --think
    max_reasoning_tokens: int | None = None


@dataclass(frozen=True)
class ChatRequest:
    model: str | None
    video_url: str
    question: Question
    stream: bool = False
    include_usage: bool = False
    options: Options = field(default_factory=Options)


# Fields OpenAI defines that change what is generated in ways this server does not do: refused unless
# they hold the value that changes nothing, so no client is told it got what it did not.
_UNSUPPORTED_UNLESS = {
    "n": (None, 1),
    "top_p": (None, 1, 1.0),
    "stop": (None, [], ""),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "response_format": (None, {"type": "text"}),
}


def parse_chat(payload: Any) -> ChatRequest:
    if not isinstance(payload, dict):
        raise bad_request("the request body must be a JSON object")
    for name, harmless in _UNSUPPORTED_UNLESS.items():
        if name in payload and payload[name] not in harmless:
            raise bad_request(f"{name} is not supported by this server", name)
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("model must be a string", "model")
    video_url, question = _conversation(payload.get("messages"))
    stream = _boolean(payload, "stream")
    stream_options = payload.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise bad_request("stream_options must be an object", "stream_options")
    include_usage = bool(stream_options and stream_options.get("include_usage") is True)
    max_tokens = payload.get("max_completion_tokens", payload.get("max_tokens"))
    options = Options(
        max_tokens=_number(max_tokens, "max_tokens", integer=True, least=1),
        temperature=_number(payload.get("temperature"), "temperature", least=0),
        seed=_number(payload.get("seed"), "seed", integer=True),
        method=_text(payload.get("method"), "method"),
        ratio=_number(payload.get("ratio"), "ratio"),
        frames=_number(payload.get("frames"), "frames", integer=True, least=1),
        fps=_number(payload.get("fps"), "fps"),
        ignore_eos=_boolean(payload, "ignore_eos"),
        think=_thinking(payload.get("chat_template_kwargs")),
        max_reasoning_tokens=_number(payload.get("max_reasoning_tokens"), "max_reasoning_tokens", integer=True, least=1),
    )
    return ChatRequest(model, video_url, question, stream, include_usage, options)


def _boolean(payload: dict[str, Any], name: str) -> bool:
    value = payload.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false", name)
    return value


def _thinking(kwargs: Any) -> bool | None:
    """`chat_template_kwargs`' thinking switch. The template's other variables are not the client's to set
    here, so any other key is refused rather than ignored."""
    if kwargs is None:
        return None
    if not isinstance(kwargs, dict):
        raise bad_request("chat_template_kwargs must be an object", "chat_template_kwargs")
    others = sorted(set(kwargs) - {"enable_thinking"})
    if others:
        raise bad_request(f"chat_template_kwargs: only enable_thinking is supported, not {', '.join(others)}",
                          "chat_template_kwargs")
    switch = kwargs.get("enable_thinking")
    if switch is not None and not isinstance(switch, bool):
        raise bad_request("chat_template_kwargs.enable_thinking must be true or false", "chat_template_kwargs")
    return switch


def _text(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise bad_request(f"{name} must be a string", name)
    return value


def _number(value: Any, name: str, *, integer: bool = False, least: float | None = None) -> Any:
    if value is None:
        return None
    # bool is an int in Python, not in JSON.
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or (isinstance(value, float) and not math.isfinite(value)):
        raise bad_request(f"{name} must be {'a whole number' if integer else 'a number'}", name)
    if least is not None and value < least:
        raise bad_request(f"{name} must be at least {least:g}", name)
    return value


def _conversation(messages: Any) -> tuple[str, Question]:
    """The video URL and the question with its earlier turns, from OpenAI `messages`."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list", "messages")
    turns: list[tuple[str, str]] = []  # (role, text), the system's left out
    videos: list[tuple[int, str]] = []  # (turn, url)
    for position, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{position}] must be an object", "messages")
        role = message.get("role")
        text, urls = _content(message.get("content"), position)
        if role in ("system", "developer"):
            if text.strip() or urls:
                raise bad_request(f"{role} messages are not supported; put instructions in the user's message", "messages")
            continue
        if role not in ("user", "assistant"):
            raise bad_request(f"messages[{position}]: role must be user, assistant or system, not {role!r}", "messages")
        if urls and role != "user":
            raise bad_request("a video goes in a user message", "messages")
        videos += [(len(turns), url) for url in urls]
        turns.append((role, text))
    expected = ["user" if index % 2 == 0 else "assistant" for index in range(len(turns))]
    if [role for role, _ in turns] != expected or not turns or turns[-1][0] != "user":
        raise bad_request("messages must alternate user and assistant, from a user message to a user message", "messages")
    if len(videos) != 1 or videos[0][0] != 0:
        what = "no video" if not videos else "more than one video" if len(videos) > 1 else "the video in a later message"
        raise bad_request(f"the first user message must hold exactly one video_url part ({what} given)", "messages")
    texts = [text for _, text in turns]
    history = tuple(zip(texts[0:-1:2], texts[1:-1:2], strict=True))
    last = texts[-1].strip() or (DEFAULT_QUESTION if not history else "")
    if not last:
        raise bad_request("the last user message needs a question", "messages")
    return videos[0][1], Question(last, history=history)


def _content(content: Any, position: int) -> tuple[str, list[str]]:
    """The text of a message's content (its text parts joined by newlines) and its video URLs."""
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise bad_request(f"messages[{position}].content must be a string or a list of parts", "messages")
    texts: list[str] = []
    urls: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "video_url" and isinstance(part.get("video_url"), dict) and isinstance(part["video_url"].get("url"), str):
            urls.append(part["video_url"]["url"])
        elif kind in ("image_url", "input_audio", "audio_url", "file"):
            raise bad_request(f"{kind} parts are not supported; send the video as a video_url part", "messages")
        else:
            raise bad_request(f"messages[{position}]: a content part must be {{\"type\": \"text\", \"text\": ...}} "
                              "or {\"type\": \"video_url\", \"video_url\": {\"url\": ...}}", "messages")
    return "\n".join(texts), urls


# --- what goes back ---------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int, reasoning_tokens: int = 0) -> dict[str, Any]:
    """OpenAI's usage; `completion_tokens` counts every generated token, the `reasoning_tokens` before the
    answer (the reasoning and its markers) included, as OpenAI counts them."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }


def reasoning_delta(text: str) -> dict[str, str]:
    """A stream delta of reasoning, under both names clients read it by."""
    return {"reasoning_content": text, "reasoning": text}


def completion(identity: str, model: str, text: str, finish_reason: str, usage: dict[str, Any],
               extra: dict[str, Any], reasoning: str | None = None) -> dict[str, Any]:
    """A `chat.completion`: the answer in `content`, never the reasoning, which is `reasoning_content` and
    `reasoning` (null when the model answered without reasoning)."""
    message = {"role": "assistant", "content": text, "reasoning_content": reasoning, "reasoning": reasoning}
    return {
        "id": identity,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage,
        "dytok": extra,
    }


def chunk(identity: str, model: str, delta: dict[str, Any] | None, finish_reason: str | None = None,
          usage: dict[str, Any] | None = None, with_usage: bool = False, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk`; `delta=None` is the usage-only chunk (empty `choices`). When the client
    asked for usage, every other chunk says `"usage": null`, as OpenAI's do."""
    body: dict[str, Any] = {
        "id": identity,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage:
        body["usage"] = usage
    if extra is not None:
        body["dytok"] = extra
    return body


def event(body: dict[str, Any] | str) -> bytes:
    """One server-sent event: `data: <json>` and a blank line."""
    data = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


DONE = event("[DONE]")
