"""`dytok serve`: a real server on 127.0.0.1 (an ephemeral port, in this process) over a tiny model, driven
with raw HTTP (httpx and sockets) and the official `openai` client: OpenAI's shapes, streaming, prefix reuse reported as cached tokens (and
answers as a fresh process gives them), the queue, disconnects, hostile requests answered with a clean 4xx
while the server goes on, and a thinking model's reasoning kept out of the answer."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from clips import write_clip, write_text_file  # noqa: E402

from dytok_cli.apps.serve.app import create_app  # noqa: E402
from dytok_cli.apps.serve.service import Limits, Service  # noqa: E402
from dytok_cli.config import Method, Settings  # noqa: E402
from dytok_cli.errors import ModelError  # noqa: E402
from dytok_cli.media.sources import MediaPolicy  # noqa: E402
from dytok_cli.pipeline import Pipeline  # noqa: E402
from dytok_cli.types import Question  # noqa: E402

KEY = "test-key"
NAME = "tiny"
MAX_TOKENS = 2000  # the server's most; a stopped answer is far shorter
MEDIA_CAP = 256 * 1024


def settings(model_dir: Path) -> Settings:
    return Settings(model=str(model_dir), method=Method.none, frames=4, max_new_tokens=MAX_TOKENS,
                    device="cpu", dtype="float32", decode_timeout=0)


@pytest.fixture(scope="module")
def media(tmp_path_factory, clip) -> Path:
    """The media folder, and beside it what must stay out of reach."""
    root = tmp_path_factory.mktemp("served")
    folder = root / "media"
    folder.mkdir()
    shutil.copy(clip, folder / "clip.mp4")
    write_clip(folder / "other.mp4", n_frames=16, size=(64, 48), fps=8.0)
    write_text_file(folder / "broken.mp4")
    shutil.copy(clip, root / "secret.mp4")
    (folder / "escape.mp4").symlink_to(root / "secret.mp4")
    return folder


@contextmanager
def serving(service: Service, media: Path) -> Iterator[tuple[str, int, Service]]:
    """The app over `service` on a real uvicorn server on 127.0.0.1:<ephemeral>, stopped however the tests end."""
    app = create_app(service, model_name=NAME, policy=MediaPolicy(media_dir=media, max_bytes=MEDIA_CAP),
                     api_key=KEY, max_body_bytes=2 * MEDIA_CAP)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    instance = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not instance.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert instance.started
    port = listening.getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", port, service
    finally:
        instance.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(tiny_llava_dir, media):
    with serving(Service(settings(tiny_llava_dir), Limits(queue=1, keep_videos=2)), media) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server[0], headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as http:
        yield http


def video_part(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def request(url: str, question: str = "what happens?", **fields) -> dict:
    return {"model": NAME, "messages": [{"role": "user", "content": [video_part(url), {"type": "text", "text": question}]}],
            "max_tokens": 8, **fields}


def data_url(path: Path) -> str:
    return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


def events(response) -> list[str]:
    """The data of each server-sent event, in order."""
    return [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]


def health(client) -> dict:
    return client.get("/health").json()


def settle(client, timeout: float = 60) -> dict:
    """/health once nothing runs or waits (a bound, not a timing claim: a stuck server fails here)."""
    deadline = time.monotonic() + timeout
    while True:
        state = health(client)
        if state["queue"]["running"] == 0 and state["queue"]["waiting"] == 0:
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.1)


def test_an_answer_in_openai_shapes(client, media):
    response = client.post("/v1/chat/completions", json=request(f"file://{media}/clip.mp4"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == NAME and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    usage = body["usage"]
    assert usage["completion_tokens"] == 8 and choice["finish_reason"] == "length"
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # The prompt as asked: its text and every visual token of the 4 sampled frames.
    assert usage["prompt_tokens"] > body["dytok"]["visual_tokens"]["full"] == 4 * 16
    assert client.get("/v1/models").json()["data"][0]["id"] == NAME


def test_the_official_openai_client_asks_streams_and_is_refused_without_the_key(client, server, media):
    """What a program written against OpenAI's own client gets: the same answer as raw HTTP, streamed or not,
    usage with the reused prefix, and the client's own error type for a wrong key."""
    openai = pytest.importorskip("openai")
    messages = request(f"file://{media}/other.mp4", "what is in it?")["messages"]
    raw = client.post("/v1/chat/completions", json=request(f"file://{media}/other.mp4", "what is in it?")).json()
    official = openai.OpenAI(base_url=f"{server[0]}/v1", api_key=KEY, max_retries=0)
    reply = official.chat.completions.create(model=NAME, messages=messages, max_tokens=8)
    assert reply.choices[0].message.content == raw["choices"][0]["message"]["content"]
    assert reply.usage.prompt_tokens_details.cached_tokens > 0  # the raw request left the video's prefix warm
    stream = official.chat.completions.create(model=NAME, messages=messages, max_tokens=8, stream=True,
                                              stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server[0]}/v1", api_key="wrong", max_retries=0).models.list()


def test_the_same_video_again_reuses_its_prefix_and_answers_alike(client, media, tmp_path):
    """A later request on the same bytes, under another name (a data: URL), finds the video's decode, vision
    pass and prompt prefix, reports the reused tokens as cached, and answers token for token the same."""
    fresh = write_clip(media / "fresh.mp4", n_frames=20, size=(64, 48), fps=8.0)
    first = client.post("/v1/chat/completions", json=request(f"file://{fresh}")).json()
    later = client.post("/v1/chat/completions", json=request(data_url(fresh))).json()
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert first["dytok"]["timings"]["decode_s"] > 0
    cached = later["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 64 < cached < later["usage"]["prompt_tokens"]  # the video's tokens and the text before them
    assert later["dytok"]["timings"]["decode_s"] == later["dytok"]["timings"]["vision_s"] == 0
    assert first["choices"][0]["message"]["content"] == later["choices"][0]["message"]["content"]


FRESH_PROCESS = """
import json, sys
from dytok_cli.config import Method, Settings
from dytok_cli.pipeline import Pipeline
model, video, question, tokens = sys.argv[1:]
settings = Settings(model=model, method=Method.none, frames=4, max_new_tokens=int(tokens), device="cpu",
                    dtype="float32", decode_timeout=0, prefix_cache=False)
answer = Pipeline(settings).ask(video, question)
print(json.dumps({"text": answer.text, "token_ids": answer.token_ids}))
"""


def test_a_later_question_is_answered_as_a_fresh_process_answers_it(client, media, tiny_llava_dir):
    """A second question on a warm video (its decode, vision pass and prompt prefix reused) gets, token for
    token, the answer a process that never saw the video gives, with nothing of its reused."""
    video = write_clip(media / "later.mp4", n_frames=18, size=(64, 48), fps=8.0)  # bytes no other test sent
    first = client.post("/v1/chat/completions", json=request("file:later.mp4", "what happens?", max_tokens=8))
    later = client.post("/v1/chat/completions", json=request("file:later.mp4", "is there a dog?", max_tokens=8)).json()
    assert first.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert later["usage"]["prompt_tokens_details"]["cached_tokens"] > 64  # the video's 64 tokens and the text before
    fresh = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tiny_llava_dir), str(video), "is there a dog?", "8"],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    assert fresh.returncode == 0, fresh.stderr
    expected = json.loads(fresh.stdout)
    assert later["choices"][0]["message"]["content"] == expected["text"]
    assert later["usage"]["completion_tokens"] == len(expected["token_ids"])


def test_a_conversation_is_asked_as_the_pipeline_asks_it(client, server, media, tiny_llava_dir):
    """Earlier turns reach the model as `Question.history`; a system message without text is no turn."""
    messages = [
        {"role": "system", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": "what happens?"}, video_part("file:clip.mp4")]},
        {"role": "assistant", "content": "a man walks"},
        {"role": "user", "content": "and then?"},
    ]
    body = client.post("/v1/chat/completions", json={"model": NAME, "messages": messages, "max_tokens": 6}).json()
    own = dataclasses.replace(settings(tiny_llava_dir), max_new_tokens=6)
    expected = Pipeline(own, model=server[2].model).ask(
        media / "clip.mp4", Question("and then?", history=(("what happens?", "a man walks"),)))
    assert body["choices"][0]["message"]["content"] == expected.text
    assert body["usage"]["completion_tokens"] == len(expected.token_ids) == 6


def test_streaming_chunks_end_with_done_and_usage(client, media):
    whole = client.post("/v1/chat/completions", json=request("file:clip.mp4")).json()
    with client.stream("POST", "/v1/chat/completions",
                       json=request("file:clip.mp4", stream=True, stream_options={"include_usage": True})) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        data = events(response)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" and chunk["id"] == chunks[0]["id"] for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks if chunk["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length" and chunks[-2]["usage"] is None
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8
    assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] > 0  # the clip was asked about before
    with client.stream("POST", "/v1/chat/completions", json=request("file:clip.mp4", stream=True)) as response:
        plain = [json.loads(item) for item in events(response)[:-1]]
    assert all("usage" not in chunk for chunk in plain)


def test_dytok_options_are_clamped_to_the_servers_maxima(client):
    body = client.post("/v1/chat/completions", json=request("file:clip.mp4", frames=500, method="visionzip",
                                                              ratio=0.5, max_tokens=10**6, temperature=0)).json()
    extra = body["dytok"]
    assert (extra["method"], extra["ratio"], extra["frames"]) == ("visionzip", 0.5, 4)
    assert extra["visual_tokens"] == {"full": 64, "kept": 32}
    body = client.post("/v1/chat/completions", json=request("file:clip.mp4", fps=100.0, max_tokens=2)).json()
    assert body["dytok"]["frames"] <= 4 and body["usage"]["completion_tokens"] == 2


def _stream_until_text(client, pieces: int = 3):
    """A long streamed answer (end-of-sequence ignored), read until `pieces` of text came; with the line
    iterator, whose end would close the response."""
    response = client.send(client.build_request("POST", "/v1/chat/completions", json=request(
        "file:clip.mp4", stream=True, ignore_eos=True, max_tokens=MAX_TOKENS)), stream=True)
    assert response.status_code == 200
    lines = response.iter_lines()
    seen = 0
    while seen < pieces:
        line = next(lines)
        if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
            seen += 1
    return response, lines


def test_a_client_that_leaves_stops_its_generation(client):
    before = settle(client)
    response, _ = _stream_until_text(client)
    response.close()
    after = settle(client)
    # Had it not stopped, it would have run its 2000 tokens and counted as answered.
    assert after["stopped"] == before["stopped"] + 1 and after["answered"] == before["answered"]


def test_a_full_queue_answers_429_with_retry_after(client, server):
    before = settle(client)
    running, _ = _stream_until_text(client, pieces=1)
    waiting = socket.create_connection(("127.0.0.1", server[1]))
    body = json.dumps(request("file:clip.mp4")).encode()
    waiting.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    deadline = time.monotonic() + 30
    while health(client)["queue"]["waiting"] < 1:
        assert time.monotonic() < deadline, health(client)
        time.sleep(0.05)
    refused = client.post("/v1/chat/completions", json=request("file:clip.mp4"))
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limit_error"
    waiting.close()
    running.close()
    after = settle(client)
    assert after["refused"] == before["refused"] + 1 and after["stopped"] == before["stopped"] + 2
    assert client.post("/v1/chat/completions", json=request("file:clip.mp4")).status_code == 200


def running_out_of_memory(service: Service, times: int, monkeypatch) -> list[tuple]:
    """The model's generation raises CUDA's out-of-memory error `times` times, then works; returns what was
    kept (videos, pipelines, an error being handled) each time the service freed memory."""
    import torch

    from dytok_cli.apps.serve import service as service_module

    generate, failures, freed = service.model.generate, [times], []

    def short_of_memory(*args, **kwargs):
        if failures[0]:
            failures[0] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return generate(*args, **kwargs)

    monkeypatch.setattr(service.model, "generate", short_of_memory)
    monkeypatch.setattr(service_module, "free_cached_memory",
                        lambda: freed.append((len(service._visuals), len(service._pipelines), sys.exc_info()[0])))
    return freed


@pytest.mark.parametrize("stream", [False, True])
def test_out_of_gpu_memory_frees_what_is_kept_and_tries_once_more(client, server, stream, monkeypatch):
    assert client.post("/v1/chat/completions", json=request("file:other.mp4")).status_code == 200  # a video kept
    freed = running_out_of_memory(server[2], 1, monkeypatch)
    before = settle(client)
    if stream:
        with client.stream("POST", "/v1/chat/completions", json=request("file:clip.mp4", stream=True)) as response:
            chunks = [json.loads(data) for data in events(response) if data != "[DONE]"]
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant" and chunks[-1]["choices"][0]["finish_reason"]
        assert not [chunk for chunk in chunks if "error" in chunk]
    else:
        response = client.post("/v1/chat/completions", json=request("file:clip.mp4"))
        assert response.status_code == 200, response.text
    # Every video and prefix was dropped, outside the error's handler (its frames hold tensors), then the
    # request was answered on a second attempt.
    assert freed == [(0, 0, None)]
    after = settle(client)
    assert after["answered"] == before["answered"] + 1 and after["failed"] == before["failed"]


def test_out_of_gpu_memory_twice_is_a_503_and_the_next_request_is_served(client, server, monkeypatch):
    freed = running_out_of_memory(server[2], 2, monkeypatch)
    response = client.post("/v1/chat/completions", json=request("file:clip.mp4"))
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "out_of_memory" and "out of GPU memory" in error["message"]
    assert len(freed) == 2 and all(exception is None for *_, exception in freed)
    assert client.post("/v1/chat/completions", json=request("file:clip.mp4")).status_code == 200


def test_a_video_no_longer_kept_takes_its_prompt_prefix_with_it(tiny_llava_dir):
    """The pipelines keep a video's prefix, whose tensors hold its encoding: evicting the video frees it."""
    service = Service(settings(tiny_llava_dir), Limits(queue=1, keep_videos=1))
    released = []
    pipeline = Pipeline(settings(tiny_llava_dir), model=service.model)
    pipeline.release = lambda: released.append("a")
    service._pipelines.put(("prompt settings", "a"), pipeline)
    service._visuals.put(("a", "sampling", "backend", None), "its visual")
    service._visuals.put(("b", "sampling", "backend", None), "another")
    assert released == ["a"]


def test_under_load_every_request_is_answered_or_refused(server):
    """16 clients x 4 requests at once: each gets 200 or 429, none is lost, and the server goes on."""

    def client_session(_: int) -> list[int]:
        with httpx.Client(base_url=server[0], headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as http:
            return [http.post("/v1/chat/completions", json=request("file:clip.mp4", max_tokens=2)).status_code
                    for _ in range(4)]

    with ThreadPoolExecutor(16) as pool:
        statuses = [status for session in pool.map(client_session, range(16)) for status in session]
    assert len(statuses) == 64 and set(statuses) <= {200, 429} and 200 in statuses
    with httpx.Client(base_url=server[0], headers={"Authorization": f"Bearer {KEY}"}) as http:
        assert settle(http)["status"] == "ok"


@pytest.mark.parametrize("url, status, fragment", [
    ("file:///etc/passwd", 403, "outside the media folder"),
    ("file://{media}/../secret.mp4", 403, "outside the media folder"),
    ("file://{media}/%2e%2e/secret.mp4", 403, "outside the media folder"),
    ("file:escape.mp4", 403, "outside the media folder"),  # a symlink out of the folder
    ("file:missing.mp4", 404, "no such file"),
    ("file://evil.example/clip.mp4", 400, "a path on this machine"),
    ("http://127.0.0.1/clip.mp4", 403, "remote videos are off"),
    ("ftp://example.com/clip.mp4", 400, "unsupported video URL"),
    ("data:video/mp4;base64,@@@@", 400, "not valid base64"),
    ("data:text/plain;base64,aGk=", 400, "video/ type"),
    ("data:video/mp4;base64," + "A" * (MEDIA_CAP * 4 // 3 + 8), 413, "limit"),
    ("file:broken.mp4", 400, "broken.mp4"),
])
def test_a_hostile_video_url_is_refused_and_the_server_goes_on(client, media, url, status, fragment):
    response = client.post("/v1/chat/completions", json=request(url.format(media=media)))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error["message"] and "Traceback" not in response.text and error["type"]
    assert client.post("/v1/chat/completions", json=request("file:clip.mp4", max_tokens=1)).status_code == 200


@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON"),  # nested past the parser's recursion limit
    (b"\xff\xfe{}", 400, "not valid JSON"),
    (json.dumps({"model": "gpt-9", "messages": []}).encode(), 400, "messages"),
    (json.dumps(request("file:clip.mp4", model="gpt-9")).encode(), 404, "does not exist"),
    (json.dumps(request("file:clip.mp4", n=2)).encode(), 400, "n is not supported"),
    (json.dumps(request("file:clip.mp4", method="magic")).encode(), 400, "method must be one of"),
    (json.dumps(request("file:clip.mp4", ratio=0)).encode(), 400, "ratio must be in (0, 1]"),
    (json.dumps(request("file:clip.mp4", max_tokens="many")).encode(), 400, "whole number"),
    (json.dumps({"messages": [{"role": "user", "content": "no video here"}]}).encode(), 400, "exactly one video_url"),
    (json.dumps({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:clip.png"}}]}]}).encode(), 400, "image_url parts"),
    (b"{" + b" " * (2 * MEDIA_CAP) + b"}", 413, "request body"),
])
def test_a_malformed_request_is_a_clean_4xx(client, body, status, fragment):
    response = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]
    assert health(client)["status"] == "ok"


def test_the_api_key_guards_every_route_but_health(server):
    with httpx.Client(base_url=server[0], timeout=30) as anonymous:
        assert anonymous.get("/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
                response = anonymous.request(method, path, headers=headers, json=request("file:clip.mp4"))
                assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        assert anonymous.get("/nowhere").status_code == 404


def test_serve_refuses_a_bad_command_line_before_loading_anything(dytok_here, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = str(taken.getsockname()[1])
    cases = [
        (["--port", port], "cannot listen on 127.0.0.1:" + port),
        (["--media-dir", str(tmp_path / "none")], "not a folder"),
        (["--allow-private-media"], "only used with --allow-remote-media"),
        (["--max-media-mb", "0"], "must be positive"),
        (["--ratio", "2"], "--ratio must be in (0, 1]"),
    ]
    try:
        for args, fragment in cases:
            result = dytok_here("serve", "--model", str(tmp_path / "no-model"), *args)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("dytok: error: "), result.stderr
            assert fragment in lines[0]
    finally:
        taken.close()


# --- a thinking model: reasoning apart from the answer ---------------------------------------------------

REASONING_MOST = 5  # the server's --max-reasoning-tokens
THINK = {"chat_template_kwargs": {"enable_thinking": True}}


@pytest.fixture(scope="module")
def thinker(build_family, load_family, media):
    """A server over a tiny Qwen3.5 whose template answers directly unless `enable_thinking` is true (as
    Qwen3.5 0.8B's), with the server's defaults: no reasoning unless asked, at most REASONING_MOST tokens of it."""
    options = {"thinking": "direct", "text_layers": 4}
    model_dir = build_family("qwen3_5", **options)
    own = dataclasses.replace(settings(model_dir), max_reasoning_tokens=REASONING_MOST)
    service = Service(own, Limits(queue=1, keep_videos=2))
    assert service.model.can_think()
    with serving(service, media) as running:
        yield running


@pytest.fixture
def thinking_client(thinker):
    with httpx.Client(base_url=thinker[0], headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as http:
        yield http


def expected_answer(service: Service, video: Path, question: str, **changes):
    """What a fresh pipeline (no prefix kept) over the server's model answers, with the server's settings changed."""
    own = dataclasses.replace(service.settings, prefix_cache=False, **changes)
    return Pipeline(own, model=service.model).ask(video, question)


def test_a_thinking_model_answers_directly_unless_asked(thinking_client, thinker, media):
    body = thinking_client.post("/v1/chat/completions", json=request("file:clip.mp4", max_tokens=4)).json()
    message = body["choices"][0]["message"]
    expected = expected_answer(thinker[2], media / "clip.mp4", "what happens?", max_new_tokens=4)
    assert expected.reasoning is None and (message["content"], message["reasoning_content"]) == (expected.text, None)
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0 and body["dytok"]["think"] is False


def test_asked_to_think_the_reasoning_comes_apart_from_the_answer(thinking_client, thinker, media):
    """`chat_template_kwargs.enable_thinking`: the reasoning in `reasoning_content` (and `reasoning`), the
    answer alone in `content`, as the pipeline gives them; the request's reasoning allowance is clamped to the
    server's, and the video's prefix is shared with requests that did not think."""
    thinking_client.post("/v1/chat/completions", json=request("file:clip.mp4", max_tokens=1))  # the prefix, kept
    body = thinking_client.post("/v1/chat/completions", json=request(
        "file:clip.mp4", max_tokens=4, max_reasoning_tokens=10**6, **THINK)).json()
    expected = expected_answer(thinker[2], media / "clip.mp4", "what happens?", max_new_tokens=4, think=True)
    message, usage = body["choices"][0]["message"], body["usage"]
    assert expected.reasoning and message["reasoning_content"] == message["reasoning"] == expected.reasoning
    assert message["content"] == expected.text and expected.reasoning not in message["content"]
    assert "<think>" not in message["content"] + message["reasoning_content"]
    # The template's switch opened the reasoning block in the prompt: the tokens after `</think>` are the answer's.
    answered = len(thinker[2].model.markers.split(expected.token_ids, reasoning_first=True).answer)
    assert usage["completion_tokens"] == len(expected.token_ids)
    assert usage["completion_tokens_details"]["reasoning_tokens"] == len(expected.token_ids) - answered
    assert usage["completion_tokens_details"]["reasoning_tokens"] <= REASONING_MOST + 1  # and its closing marker
    assert usage["prompt_tokens_details"]["cached_tokens"] > 0 and body["dytok"]["think"] is True
    # The prompt as the model's processor writes it: every patch of frames with its timestamp and markers.
    model, encoded = thinker[2].model, expected.plan.encoded
    whole = model.build_inputs(expected.plan.question, encoded.all_tokens(), video=encoded, thinking=True)
    assert usage["prompt_tokens"] == whole["input_ids"].shape[1] > usage["prompt_tokens_details"]["cached_tokens"]


def test_streamed_reasoning_comes_in_deltas_of_its_own(thinking_client, media):
    whole = thinking_client.post("/v1/chat/completions", json=request("file:clip.mp4", max_tokens=4, **THINK)).json()
    with thinking_client.stream("POST", "/v1/chat/completions", json=request(
            "file:clip.mp4", max_tokens=4, stream=True, stream_options={"include_usage": True}, **THINK)) as response:
        data = events(response)
    assert data[-1] == "[DONE]"
    deltas = [json.loads(item)["choices"][0]["delta"] for item in data[:-1] if json.loads(item)["choices"]]
    kinds = ["reasoning" if "reasoning_content" in delta else "answer" for delta in deltas if delta.get("content") or
             "reasoning_content" in delta]
    assert "reasoning" in kinds and kinds == sorted(kinds, reverse=True)  # all the reasoning, then the answer
    reasoning = "".join(delta.get("reasoning_content", "") for delta in deltas)
    assert reasoning == "".join(delta.get("reasoning", "") for delta in deltas)
    message = whole["choices"][0]["message"]
    assert reasoning == message["reasoning_content"] and "".join(delta.get("content") or "" for delta in deltas) == message["content"]
    usage = json.loads(data[-2])["usage"]
    assert usage["completion_tokens_details"] == whole["usage"]["completion_tokens_details"]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"enable_thinking": "yes"}, "must be true or false"),
    ({"enable_thinking": True, "add_vision_id": True}, "only enable_thinking is supported, not add_vision_id"),
    ([True], "must be an object"),
])
def test_a_malformed_thinking_switch_is_a_clean_400(thinking_client, kwargs, fragment):
    response = thinking_client.post("/v1/chat/completions", json=request("file:clip.mp4", chat_template_kwargs=kwargs))
    assert response.status_code == 400 and fragment in response.json()["error"]["message"]
    assert response.json()["error"]["param"] == "chat_template_kwargs"


def test_thinking_on_a_model_without_a_thinking_mode_is_refused(client, tiny_llava_dir):
    response = client.post("/v1/chat/completions", json=request("file:clip.mp4", **THINK))
    assert response.status_code == 400, response.text
    assert "has no chat template with a thinking mode" in response.json()["error"]["message"]
    # Asking not to think is what such a model does anyway.
    off = request("file:clip.mp4", max_tokens=1, chat_template_kwargs={"enable_thinking": False})
    assert client.post("/v1/chat/completions", json=off).status_code == 200
    with pytest.raises(ModelError, match="no chat template with a thinking mode"):
        Service(dataclasses.replace(settings(tiny_llava_dir), think=True))


# --- another family ------------------------------------------------------------------------------


def test_a_smolvlm2_server_answers_as_its_pipeline(build_family, media):
    """SmolVLM2 (each frame's time and wrappers written into the prompt) behind the server: the answer is a fresh
    pipeline's, and the prompt tokens count that text beside every visual token."""
    service = Service(settings(build_family("smolvlm")), Limits(queue=1, keep_videos=2))
    with serving(service, media) as (url, _, _), \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as http:
        body = http.post("/v1/chat/completions", json=request(f"file://{media}/clip.mp4")).json()
    expected = expected_answer(service, media / "clip.mp4", "what happens?", max_new_tokens=8)
    assert body["choices"][0]["message"]["content"] == expected.text
    plan = expected.plan
    assert body["dytok"]["visual_tokens"]["full"] == 4 * 16
    assert body["usage"]["prompt_tokens"] == service.model.uncompressed_prompt_length(plan.question, plan.encoded)
    assert body["usage"]["prompt_tokens"] > 4 * (16 + 7)  # each frame's marker and wrappers besides its tokens
