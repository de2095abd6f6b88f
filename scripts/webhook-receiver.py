#!/usr/bin/env python3
"""Prints the notifications Sightline sends to a webhook: `python3 scripts/webhook-receiver.py 9000`.

Listens on 127.0.0.1:PORT, answers every POST with 200 and prints one line per alert of each
Alertmanager-style payload (status, alert name, labels, summary).
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.end_headers()
        try:
            payload = json.loads(body)
        except ValueError:
            print(f"not JSON: {body[:200]!r}", flush=True)
            return
        print(f"{payload.get('status', '?').upper()} {payload.get('groupKey', '')}", flush=True)
        for alert in payload.get("alerts", []):
            labels = " ".join(f"{k}={v}" for k, v in sorted(alert.get("labels", {}).items()))
            summary = alert.get("annotations", {}).get("summary", "")
            print(f"  {alert.get('status')}: {labels}\n    {summary}", flush=True)

    def log_message(self, *args) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    print(f"listening on http://127.0.0.1:{port}/ (Ctrl-C stops)", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()
