"""A real HTTP receiver for notification tests: a ThreadingHTTPServer on 127.0.0.1:0, in a thread,
that records every POST (path, headers, body, arrival time, the status it answered) and can be
told to answer 500 to the first N posts of a path. Nothing is mocked: the server under test posts
to it over TCP as it would to Alertmanager's webhook receivers or Slack."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes
    arrived: float  # time.time() when the whole body was read
    status: int  # what the receiver answered

    def json(self):
        return json.loads(self.body)


@dataclass
class _Plan:
    fail_first: int = 0  # answer 500 to this many posts, then 200
    failed: int = 0


class WebhookReceiver:
    """Start with `with WebhookReceiver() as rx:` (or start()/stop()); URLs by `rx.url("/team")`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._posts: list[Post] = []
        self._plans: dict[str, _Plan] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status = receiver._answer(self.path)
                post = Post(path=self.path, headers={k.lower(): v for k, v in self.headers.items()},
                            body=body, arrived=time.time(), status=status)
                with receiver._lock:
                    receiver._posts.append(post)
                payload = b'{"status":"ok"}' if status == 200 else b'{"error":"planned failure"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    def _answer(self, path: str) -> int:
        with self._lock:
            plan = self._plans.get(path)
            if plan and plan.failed < plan.fail_first:
                plan.failed += 1
                return 500
        return 200

    # ---- control ---------------------------------------------------------------

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "WebhookReceiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail_first(self, path: str, n: int) -> None:
        """Answer 500 to the next n posts to path (then 200)."""
        with self._lock:
            self._plans[path] = _Plan(fail_first=n)

    # ---- what arrived ----------------------------------------------------------

    def posts(self, path: str | None = None) -> list[Post]:
        with self._lock:
            return [p for p in self._posts if path is None or p.path == path]

    def delivered(self, path: str) -> list[Post]:
        """The posts to path answered 200 (what the receiver accepted)."""
        return [p for p in self.posts(path) if p.status == 200]
