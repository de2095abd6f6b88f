"""Hand-made OTLP/JSON spans for the tests of explain, compare, log patterns and alert
explanations: a server request with its route, status and attributes, sent in batches."""

from __future__ import annotations

import os
import time

from conftest import SightlineServer

MINUTE_NS = 60_000_000_000


def text_attr(key: str, value: str) -> dict:
    return {"key": key, "value": {"stringValue": value}}


def request(start_ns: int, route: str, failed: bool, ms: float = 20.0, attrs: dict | None = None,
            exception: str | None = None) -> dict:
    attributes = [text_attr("http.route", route), text_attr("http.request.method", "GET"),
                  {"key": "http.response.status_code", "value": {"intValue": "500" if failed else "200"}}]
    attributes += [text_attr(k, v) for k, v in (attrs or {}).items()]
    span = {"traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(), "name": f"GET {route}", "kind": 2,
            "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(start_ns + int(ms * 1e6)),
            "attributes": attributes}
    if failed:
        span["status"] = {"code": 2, "message": "boom"}
    if exception:
        span["events"] = [{"name": "exception", "timeUnixNano": str(start_ns + int(ms * 1e6)),
                           "attributes": [text_attr("exception.type", exception), text_attr("exception.message", "x")]}]
    return span


def send(srv: SightlineServer, service: str, version: str, spans: list[dict]) -> None:
    for i in range(0, len(spans), 500):
        body = {"resourceSpans": [{"resource": {"attributes": [text_attr("service.name", service),
                                                               text_attr("service.version", version)]},
                                   "scopeSpans": [{"scope": {"name": "e2e.changes"}, "spans": spans[i:i + 500]}]}]}
        resp = srv.post_otlp("/v1/traces", body)
        assert resp.status_code == 200 and not resp.json().get("partialSuccess"), resp.text


def spread(n: int, minutes: int = 20) -> list[int]:
    """n start times over the last `minutes` minutes (ending a minute ago)."""
    now = time.time_ns() - MINUTE_NS
    return [now - minutes * MINUTE_NS + i * (minutes * MINUTE_NS // n) for i in range(n)]
