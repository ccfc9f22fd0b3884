"""First vs later request latency of `dytok serve`, through HTTP, on random weights of real shapes.

For each model shape, starts `dytok serve --random-weights --model SHAPE` on 127.0.0.1 (an ephemeral port)
with a media folder holding 640x360 clips written by `dytok make-clip`. A first request on another clip
warms the process (lazy initialisation that any first request pays once), then it sends, one after another:

1. a question about the clip (the first request: decode, vision encoder, the whole prompt's prefill);
2. the same question again (the video warm, its prompt prefix reused);
3. another question on the same clip.

It reports each request's wall-clock latency as the client sees it, the first's over each later one's, and
`usage.prompt_tokens_details.cached_tokens`. Each answer is `--max-new-tokens` tokens long (`ignore_eos`),
greedy, so every request decodes as many tokens. Absolute seconds on a shared machine are noise: compare
the ratios measured in one run, next to the load average printed with them. Nothing is downloaded.

    python benchmarks/serve_latency.py --model qwen3.5-0.8b --model llava-ov-0.5b --frames 8
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

QUESTIONS = ("What happens in the video?", "What color is the ball?")
SERVING = re.compile(r"serving .* at (http://\S+)/v1")


def dytok_script() -> str:
    dytok = shutil.which("dytok")
    if dytok is None:
        sys.exit("install the package first: python -m pip install -e '.[serve]'")
    return dytok


class LoadAverage:
    """The 1-minute load average, sampled every second while the requests run."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.samples.append(os.getloadavg()[0])
            self._done.wait(1.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def summary(self) -> str:
        if not self.samples:
            return "n/a"
        return f"{min(self.samples):.2f}-{max(self.samples):.2f} (mean {sum(self.samples) / len(self.samples):.2f})"


class Server:
    """`dytok serve` in a process of its own; its stderr drained (and kept) so it never blocks."""

    def __init__(self, command: list[str], timeout: float) -> None:
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        self.log: list[str] = []
        self.url: str | None = None
        found = threading.Event()

        def drain() -> None:
            for line in self.process.stderr:
                self.log.append(line)
                match = SERVING.search(line)
                if match and self.url is None:
                    self.url = match.group(1)
                    found.set()
            found.set()  # the process ended

        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(timeout) or self.url is None:
            self.stop()
            sys.exit("dytok serve did not start:\n" + "".join(self.log[-20:]))
        deadline = time.monotonic() + timeout
        while True:  # listening once /health answers
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5):
                    return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    sys.exit("dytok serve did not answer /health:\n" + "".join(self.log[-20:]))
                time.sleep(0.2)

    def ask(self, question: str, max_tokens: int, clip: str = "clip.mp4") -> tuple[float, dict]:
        """Seconds the request took, and the response."""
        body = {
            "messages": [{"role": "user", "content": [
                {"type": "video_url", "video_url": {"url": f"file:{clip}"}},
                {"type": "text", "text": question}]}],
            "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
        }
        request = urllib.request.Request(f"{self.url}/v1/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=3600) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:
            sys.exit(f"request failed ({error.code}): {error.read().decode(errors='replace')}")
        return time.perf_counter() - started, answer

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def measure(dytok: str, shape: str, media: Path, args: argparse.Namespace) -> dict:
    command = [dytok, "serve", "--random-weights", "--model", shape, "--media-dir", str(media), "--port", "0",
               "--frames", str(args.frames), "--max-new-tokens", str(args.max_new_tokens), "--device", "cpu",
               "--dtype", args.dtype, *args.serve_args]
    server = Server(command, timeout=args.start_timeout)
    try:
        if args.warmup:
            server.ask(QUESTIONS[0], args.max_new_tokens, clip="warmup.mp4")
        load = LoadAverage()
        load.start()
        try:
            runs = [server.ask(question, args.max_new_tokens) for question in (QUESTIONS[0], QUESTIONS[0], QUESTIONS[1])]
        finally:
            load.stop()
    finally:
        server.stop()
    (first, cold), (again, same), (other, different) = runs
    return {
        "shape": shape,
        "seconds": [round(first, 3), round(again, 3), round(other, 3)],
        "speedup": [round(first / again, 2), round(first / other, 2)],
        "cached_tokens": [answer["usage"]["prompt_tokens_details"]["cached_tokens"] for answer in (cold, same, different)],
        "prompt_tokens": cold["usage"]["prompt_tokens"],
        "visual_tokens": cold["dytok"]["visual_tokens"],
        "timings": [answer["dytok"]["timings"] for answer in (cold, same, different)],
        "same_answer": cold["choices"][0]["message"]["content"] == same["choices"][0]["message"]["content"],
        "load_average": load.summary(),
    }


def table(results: list[dict]) -> str:
    lines = ["| Shape | First | Same again | Other question | First / later | Cached tokens |",
             "|---|--:|--:|--:|--:|--:|"]
    for result in results:
        first, again, other = result["seconds"]
        cached = result["cached_tokens"]
        lines.append(f"| {result['shape']} | {first:.1f} s | {again:.1f} s | {other:.1f} s | "
                     f"{result['speedup'][0]:.1f}x, {result['speedup'][1]:.1f}x | "
                     f"{cached[0]}, {cached[1]}, {cached[2]} of {result['prompt_tokens']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", dest="shapes", action="append", metavar="PRESET",
                        help="a shape preset, random weights (repeat; default: qwen3.5-0.8b and llava-ov-0.5b)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--dtype", default="auto", help="as dytok's --dtype (auto: bfloat16 on a CPU with native bf16)")
    parser.add_argument("--start-timeout", type=float, default=600, help="seconds a server may take to load")
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                        help="first ask about another clip, so the first measured request is a video's, not the process's")
    parser.add_argument("--json", action="store_true", help="print each shape's figures as JSON too")
    parser.add_argument("serve_args", nargs="*", metavar="-- SERVE_FLAGS", help="more flags for dytok serve")
    args = parser.parse_args()
    dytok = dytok_script()
    shapes = args.shapes or ["qwen3.5-0.8b", "llava-ov-0.5b"]
    results = []
    with tempfile.TemporaryDirectory(prefix="dytok-serve-latency-") as scratch:
        media = Path(scratch)
        for name, seconds in (("clip.mp4", "4"), ("warmup.mp4", "3")):  # other bytes: another video
            subprocess.run([dytok, "make-clip", str(media / name), "--size", "640x360", "--seconds", seconds],
                           check=True, capture_output=True)
        for shape in shapes:
            result = measure(dytok, shape, media, args)
            results.append(result)
            if args.json:
                print(json.dumps(result), flush=True)
            print(f"# {shape}: load average {result['load_average']} during its requests", file=sys.stderr, flush=True)
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"{args.frames} frames of a 640x360 clip, answers of {args.max_new_tokens} tokens, --dtype {args.dtype}, "
          f"OMP_NUM_THREADS={threads}, warm-up request {'on' if args.warmup else 'off'}; "
          f"load average (1 min) during each shape's requests: "
          + "; ".join(f"{result['shape']} {result['load_average']}" for result in results))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
