"""A tiny OpenAI-compatible HTTP server for tests: real HTTP on 127.0.0.1, deterministic answers.

It answers ``POST /v1/chat/completions``, ``POST /v1/embeddings`` and, when given a ``completions``
callable, ``POST /v1/completions`` (and ``GET /v1/models``, listing ``models``) from a
``ThreadingHTTPServer`` running in a daemon thread, counts every request, and injects faults:

* ``faults={3: "429", 5: "500", 7: "malformed"}``: the 3rd request (1-based, over all paths) gets a
  429 with ``Retry-After``, the 5th a 500, the 7th a 200 whose body is not JSON.
* ``fail_if=callable(path, body) -> fault | None``: a fault chosen from the request content (e.g. a
  persistent 500 for every request that mentions one user's items). Faults: ``"429"``, ``"500"``,
  ``"503"``, ``"404"`` (the model named in the body does not exist), ``"malformed"``, ``"empty"`` (200 with no choices), ``"hang"`` (sleep ``hang_seconds``).

Chat answers are JSON objects derived from the request (sha256 of the messages), so the same request
always gets the same answer: ``{"taste": "...", "explanations": [{"item_id": ..., "reason": ...}]}``
with one explanation per ``"item_id": N`` found in the first user message (the task prompt). Pass
``responder`` to answer differently (``responder(body) -> str`` returns the message content). Embeddings are
deterministic unit vectors of ``embedding_dim`` floats seeded by the input text's sha256.

Example:
    >>> with FakeOpenAIServer(faults={1: "500"}) as server:      # doctest: +SKIP
    ...     client = OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    ...     server.count("/v1/chat/completions")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOpenAIServer", "default_chat_content", "deterministic_embedding"]

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
_ITEM_ID = re.compile(r'"item_id":\s*(\d+)')


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def default_chat_content(body: dict[str, Any]) -> str:
    """The default answer: valid JSON for every step of the distillation prompts."""
    messages = body.get("messages", [])
    digest = _digest(messages)[:8]
    # The task prompt is the first user message; retries append an assistant + user message pair.
    task = next((m.get("content", "") for m in messages if m.get("role") == "user"), "")
    ids = list(dict.fromkeys(int(x) for x in _ITEM_ID.findall(str(task))))
    answer = {
        "taste": f"I enjoy films with a clear story; my notes {digest} say so.",
        "explanations": [
            {"item_id": item_id, "reason": f"it matched my taste (note {digest}-{item_id})"}
            for item_id in ids
        ],
    }
    return json.dumps(answer)


def deterministic_embedding(text: str, dim: int) -> list[float]:
    """A unit vector of ``dim`` floats derived from ``sha256(text)`` (same text, same vector)."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        block = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        for (word,) in struct.iter_unpack("<I", block):
            values.append(word / 2**32 - 0.5)
        counter += 1
    values = values[:dim]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


class FakeOpenAIServer:
    """An OpenAI-compatible server on ``127.0.0.1:<free port>`` for one test.

    Args:
        faults: request number (1-based, counted over all paths) -> fault name.
        fail_if: ``(path, body) -> fault name or None``, checked for every request.
        responder: ``body -> message content`` for chat completions (default
            :func:`default_chat_content`).
        retry_after: value of the ``Retry-After`` header sent with injected 429s (seconds).
        embedding_dim: length of the vectors ``/v1/embeddings`` returns.
        hang_seconds: how long the ``"hang"`` fault sleeps before answering.
        completions: ``body -> response payload`` for ``/v1/completions`` (404 when None).
        models: the ``data`` entries ``GET /v1/models`` lists (default one model, ``"fake"``).

    Attributes:
        requests: ``(number, path, body, monotonic time)`` of every request received, in order.
    """

    def __init__(
        self,
        *,
        faults: dict[int, str] | None = None,
        fail_if: Callable[[str, dict[str, Any]], str | None] | None = None,
        responder: Callable[[dict[str, Any]], str] | None = None,
        retry_after: float = 0.05,
        embedding_dim: int = 8,
        hang_seconds: float = 2.0,
        completions: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        models: list[dict[str, Any]] | None = None,
    ) -> None:
        self.faults = dict(faults or {})
        self.fail_if = fail_if
        self.responder = responder or default_chat_content
        self.retry_after = retry_after
        self.embedding_dim = embedding_dim
        self.hang_seconds = hang_seconds
        self.completions = completions
        self.models = models if models is not None else [{"id": "fake", "object": "model"}]
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[tuple[int, str, dict[str, Any], float]] = []
        self.faults_sent: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeOpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without NODELAY, Nagle + delayed ACK
                # add ~40 ms to every request.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with server._lock:
                    server._connections.add(self.request)

            def finish(self) -> None:
                with server._lock:
                    server._connections.discard(self.request)
                super().finish()

            def log_message(self, format: str, *args: Any) -> None:  # silence stderr
                return

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": server.models})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send(400, {"error": {"message": "request body is not JSON"}})
                    return
                path = self.path.rstrip("/")
                _number, fault = server._register(path, body)
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(path, body, fault)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self, path: str, body: dict[str, Any], fault: str | None) -> None:
                if fault is not None and self._fault(fault, body):
                    return
                if path == COMPLETIONS_PATH and server.completions is not None:
                    self._send(200, server.completions(body))
                elif path == CHAT_PATH:
                    self._send(200, server._chat_answer(body))
                elif path == EMBEDDINGS_PATH:
                    self._send(200, server._embedding_answer(body))
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def _fault(self, fault: str, body_of_fault: dict[str, Any] | None = None) -> bool:
                """Send the fault's response; False if the fault only delays the normal answer."""
                if fault == "429":
                    self._send(
                        429,
                        {"error": {"message": "rate limited (injected)", "type": "rate_limit"}},
                        headers={"Retry-After": f"{server.retry_after:g}"},
                    )
                elif fault == "404":
                    model = (body_of_fault or {}).get("model")
                    self._send(404, {"error": {"message": f"The model `{model}` does not exist.",
                                               "type": "NotFoundError", "code": 404}})
                elif fault in ("500", "503"):
                    self._send(int(fault), {"error": {"message": f"server error {fault} (injected)"}})
                elif fault == "malformed":
                    self._send_raw(200, b'{"id": "chatcmpl-broken", "choices": [', "application/json")
                elif fault == "empty":
                    self._send(200, {"id": "chatcmpl-empty", "object": "chat.completion",
                                     "created": 0, "model": "fake", "choices": []})
                elif fault == "hang":
                    time.sleep(server.hang_seconds)
                    return False
                else:
                    raise ValueError(f"unknown fault {fault!r}")
                return True

            def _send(self, status: int, payload: dict[str, Any],
                      headers: dict[str, str] | None = None) -> None:
                self._send_raw(status, json.dumps(payload).encode(), "application/json", headers)

            def _send_raw(self, status: int, data: bytes, content_type: str,
                          headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # client gave up (timeout test)
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open (keep-alive) connection, as a killed server would."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- introspection ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``, as the ``openai`` client's ``base_url`` expects."""
        return f"http://127.0.0.1:{self.port}/v1"

    def count(self, path: str | None = CHAT_PATH) -> int:
        """Number of requests received on ``path`` (all paths when ``None``)."""
        with self._lock:
            return sum(1 for _, p, _, _ in self.requests if path is None or p == path)

    def bodies(self, path: str = CHAT_PATH) -> list[dict[str, Any]]:
        with self._lock:
            return [b for _, p, b, _ in self.requests if p == path]

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults_sent.clear()

    # -- internals -------------------------------------------------------------------------------
    def _register(self, path: str, body: dict[str, Any]) -> tuple[int, str | None]:
        with self._lock:
            number = len(self.requests) + 1
            self.requests.append((number, path, body, time.monotonic()))
            fault = self.faults.get(number)
            if fault is None and self.fail_if is not None:
                fault = self.fail_if(path, body)
            if fault is not None:
                self.faults_sent.append((number, fault))
        return number, fault

    def _chat_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        content = self.responder(body)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = len(content.split())
        return {
            "id": "chatcmpl-" + _digest(body)[:12],
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _embedding_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body.get("input", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        data = [
            {"object": "embedding", "index": i,
             "embedding": deterministic_embedding(str(text), self.embedding_dim)}
            for i, text in enumerate(inputs)
        ]
        tokens = sum(len(str(t).split()) for t in inputs)
        return {
            "object": "list",
            "data": data,
            "model": body.get("model", "fake"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
