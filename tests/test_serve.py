"""`dytok serve`: a real server on 127.0.0.1 (an ephemeral port, in this process) over a tiny model, driven
with raw HTTP (httpx and sockets): OpenAI's shapes, streaming, prefix reuse reported as cached tokens, the
queue, disconnects, and hostile requests answered with a clean 4xx while the server goes on."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from clips import write_clip, write_text_file  # noqa: E402

from dytok_cli.apps.serve.app import create_app  # noqa: E402
from dytok_cli.apps.serve.service import Limits, Service  # noqa: E402
from dytok_cli.config import Method, Settings  # noqa: E402
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


@pytest.fixture(scope="module")
def server(tiny_llava_dir, media):
    """The app on a real uvicorn server on 127.0.0.1:<ephemeral>, stopped however the tests end."""
    service = Service(settings(tiny_llava_dir), Limits(queue=1, keep_videos=2))
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
