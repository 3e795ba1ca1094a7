"""A real chat-completions server on loopback for the judge tests: scripted judges and injected faults.

Each model name is a judge with a rule (`JUDGES`); `server.faults[model]` lists what the k-th attempt
of each distinct prompt gets before the judge answers (a 429 with Retry-After, a 500, a slow reply,
a hung or dropped connection, malformed bodies). Binds 127.0.0.1 only, on a free port; a timer shuts
it down by itself even if a test forgets to.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HARD_TIMEOUT = 120.0  # seconds; the server stops by itself after this


def _responses(prompt: str) -> tuple[str, str]:
    out = []
    for k in (1, 2):
        m = re.search(rf"\[The Start of Response {k}\]\n(.*?)\n\[The End of Response {k}\]", prompt, re.S)
        out.append(m.group(1) if m else "")
    return out[0], out[1]


def quality(response: str) -> int:
    m = re.search(r"q=(\d+)", response)
    return int(m.group(1)) if m else 0


def fair(prompt: str) -> str:
    """Prefers the higher q=; explains first, then a JSON verdict line."""
    r1, r2 = _responses(prompt)
    q1, q2 = quality(r1), quality(r2)
    verdict = "1" if q1 > q2 else "2" if q2 > q1 else "tie"
    return (f"Response 1 has quality {q1} and Response 2 has quality {q2}; Response 2 is better in style.\n"
            f'{{"score_1": {q1}, "score_2": {q2}, "verdict": "{verdict}"}}')


def biased(prompt: str) -> str:
    """Always prefers whatever comes first; scores only, no verdict key."""
    return 'The first one reads better.\n{"score_1": 8, "score_2": 3}'


def longer(prompt: str) -> str:
    """Prefers the longer response, in FastChat's text format."""
    r1, r2 = _responses(prompt)
    tag = "1" if len(r1) > len(r2) else "2" if len(r2) > len(r1) else "C"
    return f"Comparing lengths. Final verdict: [[{tag}]]"


def mumbler(prompt: str) -> str:
    """Fair, except it never gives a verdict when Response 1 mentions 'mumble'."""
    r1, _ = _responses(prompt)
    return "Both have merits and I would rather not say." if "mumble" in r1 else fair(prompt)


JUDGES = {"fair": fair, "biased": biased, "longer": longer, "mumbler": mumbler}


class JudgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.faults: dict[str, list] = {}  # model -> actions for attempts 1, 2, ... of each prompt
        self.api_key: str | None = None  # when set, requests must carry it
        self.attempts: Counter = Counter()  # (model, prompt digest) -> attempts seen
        self.log: list[dict] = []  # every request: model, prompt digest, time, action
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0  # seconds before every answer (to see concurrency)
        self._timer = threading.Timer(HARD_TIMEOUT, self.close_all)
        self._timer.daemon = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request, client_address):  # a client that timed out and left is expected here
        pass

    def start(self) -> "JudgeServer":
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._timer.start()
        return self

    def close_all(self) -> None:
        self.stop.set()
        self.shutdown()
        self.server_close()
        self._timer.cancel()

    def requests_for(self, model: str) -> list[dict]:
        return [r for r in self.log if r["model"] == model]


class Handler(BaseHTTPRequestHandler):
    server: JudgeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, code: int, body: bytes, headers: dict | None = None, ctype: str = "application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        s = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model = body.get("model")
        if self.path != "/v1/chat/completions" or not isinstance(body.get("messages"), list) \
                or "temperature" not in body or "max_tokens" not in body:
            return self._send(400, b'{"error": "bad request"}')
        if s.api_key is not None and self.headers.get("Authorization") != f"Bearer {s.api_key}":
            return self._send(401, b'{"error": "invalid api key"}')
        prompt = body["messages"][-1]["content"]
        pid = hashlib.sha256(prompt.encode()).hexdigest()[:12]
        with s.lock:
            s.attempts[(model, pid)] += 1
            k = s.attempts[(model, pid)]
            plan = s.faults.get(model, [])
            action = plan[k - 1] if k <= len(plan) else "answer"
            s.log.append({"model": model, "prompt": pid, "t": time.monotonic(), "action": action})
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
        try:
            time.sleep(s.delay)
            self._act(action, model, prompt)
        finally:
            with s.lock:
                s.in_flight -= 1

    def _act(self, action, model: str, prompt: str):
        if isinstance(action, tuple) and action[0] == "429":
            return self._send(429, b'{"error": "slow down"}', {"Retry-After": action[1]})
        if action == "500":
            return self._send(500, b'{"error": "internal"}')
        if action == "503":
            return self._send(503, b"<html>busy</html>", ctype="text/html")
        if action == "not_json":
            return self._send(200, b"<html>gateway says hi</html>")
        if action == "truncated":
            return self._send(200, b'{"id": "x", "choices": [{"message": {"role": "assist')
        if action == "no_choices":
            return self._send(200, b'{"id": "x", "object": "chat.completion", "choices": []}')
        if action == "null_content":
            return self._send(200, json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": None},
                                                             "finish_reason": "stop"}]}).encode())
        if action == "slow":  # answers, but only after the client's timeout
            time.sleep(1.5)
        if action == "hang":  # holds the connection open and never answers
            self.server.stop.wait(10)
            self.close_connection = True
            return
        if action == "drop":  # closes the connection without a reply
            self.close_connection = True
            self.connection.shutdown(2)
            return
        text = JUDGES[model](prompt)
        self._send(200, json.dumps({
            "id": "chatcmpl-test", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }).encode())
