"""The HTTP face of the service: OpenAI's `/v1/chat/completions` and `/v1/models`, and `/health`.

FastAPI on uvicorn, the stack vLLM, SGLang, mlx-vlm and `transformers serve` run their OpenAI-compatible
servers on. Every error is OpenAI-shaped JSON with its status; nothing a client sends reaches a traceback,
and the next request is served as usual.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import DytokError
from ...media.sources import (
    LocalDigests,
    MediaError,
    MediaFile,
    MediaMissing,
    MediaPolicy,
    MediaRefused,
    MediaTooLarge,
    MediaUnreachable,
    open_media,
)
from . import protocol
from .protocol import ApiError
from .service import Job, Outcome, Service, Stopped

DEFAULT_MAX_BODY_BYTES = 384 * 1024 * 1024  # a data: URL of the default media cap, base64 and all


def _media_status(error: MediaError) -> int:
    if isinstance(error, MediaRefused):
        return 403
    if isinstance(error, MediaMissing):
        return 404
    if isinstance(error, MediaTooLarge):
        return 413
    if isinstance(error, MediaUnreachable):
        return 502
    return 400


def as_api_error(error: BaseException) -> ApiError:
    """The OpenAI-shaped error a failure is answered with."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, MediaError):
        return ApiError(_media_status(error), str(error), param="messages")
    if isinstance(error, DytokError):  # a video that cannot be decoded, settings the model refuses
        return ApiError(400, str(error))
    reason = str(error).splitlines()[0] if str(error) else ""
    print(f"dytok: error: unexpected {type(error).__name__}: {reason}", file=sys.stderr)
    return ApiError(500, f"internal error ({type(error).__name__})")


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is over the {limit} bytes limit")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise ApiError(413, f"the request body is over the {limit} bytes limit")
    return bytes(body)


async def _watch_disconnect(request: Request, job: Job) -> None:
    """Stop `job` once its client goes away (the receive channel says so once the body is read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.stop.set()
            return


def create_app(service: Service, *, model_name: str, policy: MediaPolicy, api_key: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, spool: Path | None = None) -> FastAPI:
    """The app for `service`, which answers as `model_name`; `policy` says which video URLs it takes."""
    spool_dir = spool or Path(tempfile.mkdtemp(prefix="dytok-serve-"))
    digests = LocalDigests()
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.shutdown()  # answers in progress stop between two tokens

    app = FastAPI(title="dytok", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error_response(ApiError(error.status_code, str(error.detail), code="not_found" if error.status_code == 404 else None))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return _error_response(error)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise ApiError(401, "a valid API key is required: Authorization: Bearer KEY", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name,
                "queue": {"waiting": service.waiting, "running": service.running, "limit": service.limits.queue},
                **service.counts}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": started, "owned_by": "dytok"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            return await complete(request)
        except Exception as error:  # an ApiError as it is, anything else a 500; the server goes on
            return _error_response(as_api_error(error))

    async def complete(request: Request) -> Response:
        authorize(request)
        body = await _read_body(request, max_body_bytes)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ApiError(400, f"the request body is not valid JSON: {error}") from None
        chat = protocol.parse_chat(payload)
        if chat.model is not None and chat.model != model_name:
            raise ApiError(404, f"the model {chat.model!r} does not exist; this server answers as {model_name!r}",
                           code="model_not_found", param="model")
        settings = service.settings_for(chat.options)
        try:
            media: MediaFile = await anyio.to_thread.run_sync(open_media, chat.video_url, policy, spool_dir, digests)
        except MediaError as error:
            raise as_api_error(error) from None
        job = Job(settings, media, chat.question, chat.options.ignore_eos, asyncio.get_running_loop())
        try:
            service.submit(job)
        except ApiError:
            media.discard()
            raise
        watcher = asyncio.create_task(_watch_disconnect(request, job))
        try:
            kind, value = await job.events.get()
        except BaseException:
            job.stop.set()
            watcher.cancel()
            service.finished(job)
            raise
        if kind == "error":
            watcher.cancel()
            service.finished(job)
            return _error_response(as_api_error(value if not isinstance(value, Stopped) else ApiError(499, "stopped")))
        identity = protocol.completion_id()
        if chat.stream:
            return StreamingResponse(_stream(job, watcher, service, identity, model_name, chat.include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            while True:
                kind, value = await job.events.get()
                if kind in ("text", "reasoning"):
                    continue  # the whole answer comes with "done"
                if kind == "done":
                    outcome: Outcome = value
                    return JSONResponse(protocol.completion(
                        identity, model_name, outcome.answer.text, outcome.finish_reason, _usage(outcome), _extra(outcome),
                        reasoning=outcome.answer.reasoning))
                else:
                    return _error_response(as_api_error(value))
        finally:
            job.stop.set()
            watcher.cancel()
            service.finished(job)

    return app


def _usage(outcome: Outcome) -> dict[str, Any]:
    return protocol.usage(outcome.prompt_tokens, len(outcome.answer.token_ids), outcome.answer.plan.reused_prefix_tokens,
                          outcome.reasoning_tokens)


def _extra(outcome: Outcome) -> dict[str, Any]:
    """What DyToK did for this answer, beside OpenAI's fields (clients ignore what they do not know)."""
    plan, settings = outcome.answer.plan, outcome.settings
    encoded = plan.encoded
    return {
        "method": settings.method.value,
        "ratio": settings.ratio,
        "think": settings.think,
        "frames": len(plan.frames.indices),
        "fps": settings.fps,
        "visual_tokens": {"full": encoded.num_frames * encoded.tokens_per_frame, "kept": plan.kept_tokens},
        "reused_prefix_tokens": plan.reused_prefix_tokens,
        "timings": {key: round(value, 4) for key, value in outcome.answer.timings.items()},
    }


async def _stream(job: Job, watcher: asyncio.Task, service: Service, identity: str, model: str,
                  include_usage: bool) -> AsyncIterator[bytes]:
    """The answer as `chat.completion.chunk` events: the role, any reasoning (`reasoning_content` and
    `reasoning` deltas) then the answer's text (`content` deltas) as they come, the finish reason, with
    `include_usage` a usage-only chunk, then `[DONE]`. An error after the first event is sent as an event
    of its own (the status line is gone by then)."""
    try:
        yield protocol.event(protocol.chunk(identity, model, {"role": "assistant", "content": ""}, with_usage=include_usage))
        while True:
            kind, value = await job.events.get()
            if kind == "text":
                yield protocol.event(protocol.chunk(identity, model, {"content": value}, with_usage=include_usage))
            elif kind == "reasoning":
                yield protocol.event(protocol.chunk(identity, model, protocol.reasoning_delta(value), with_usage=include_usage))
            elif kind == "done":
                yield protocol.event(protocol.chunk(identity, model, {}, value.finish_reason, with_usage=include_usage))
                if include_usage:
                    yield protocol.event(protocol.chunk(identity, model, None, usage=_usage(value), with_usage=True,
                                                        extra=_extra(value)))
                break
            else:
                yield protocol.event(as_api_error(value).body())
                break
        yield protocol.DONE
    finally:
        job.stop.set()
        watcher.cancel()
        service.finished(job)


def run(app: FastAPI, listening: socket.socket, log_level: str = "info") -> None:
    """Serve `app` on the bound socket `listening` until Ctrl-C or SIGTERM."""
    import uvicorn

    # uvicorn logs requests to stdout; here, as every message of dytok's, they go to stderr.
    logging = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    logging["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config = uvicorn.Config(app, log_level=log_level, log_config=logging, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[listening])
