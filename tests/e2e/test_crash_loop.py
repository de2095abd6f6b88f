"""Crash safety, short form: SIGKILL the server at random moments under load, 10 times.

Concurrent senders post OTLP/JSON spans and logs with ids that are never reused; the server is
killed with SIGKILL after a random delay (seeded), restarted on the same data folder, and the
stored rows are checked against what was acknowledged: every acknowledged record present, none
stored twice, none that nobody sent, no request stored in part, and span_rollups counting every
stored span once as a request. The long form (hundreds of cycles) is the same code run as
`python tests/e2e/crash_loop.py --cycles 300 --seed N`; see RELIABILITY.md.

SIGHTLINE_CRASH_LOOP_SEED picks another seed (the default one is fixed so a failure names it).
"""

from __future__ import annotations

import os

import pytest

import crash_loop
from conftest import sightline_bin

CYCLES = 10
SEED = int(os.environ.get("SIGHTLINE_CRASH_LOOP_SEED", "20261122"))


def test_sigkill_loop_keeps_every_acknowledged_record_once(tmp_path):
    cfg = crash_loop.Config(binary=sightline_bin(), cycles=CYCLES, seed=SEED, senders=4,
                            min_delay=0.05, max_delay=1.5, flush_interval="500ms",
                            check_every=5, compaction_every=0, workdir=tmp_path / "crash-loop")
    try:
        summary = crash_loop.run(cfg)
    except crash_loop.CrashLoopFailure as exc:
        pytest.fail(f"crash loop (seed {SEED}) broke a guarantee:\n{exc}", pytrace=False)

    print({k: v for k, v in summary.items() if k not in ("lives", "check_log")})
    assert summary["cycles"] == CYCLES and len(summary["lives"]) == CYCLES
    assert summary["missing"] == summary["duplicates"] == summary["foreign"] == 0
    assert summary["partially_stored_requests"] == 0
    assert summary["span_rollup_requests"] == summary["rows_stored"]["spans"] > 0, summary["rows_stored"]
    # The loop must have tested something: acknowledged writes before kills, and requests cut
    # off by a kill (whose records may or may not be stored, but never twice).
    assert summary["acknowledged_records"] > 1000, summary["acknowledged_records"]
    assert summary["unknown_records"] > 0, "no kill cut a request off: the kills missed the load"
    assert summary["checks"] >= 3  # after cycle 5, after the last kill, after SIGTERM + restart


def test_the_check_names_a_loss_a_duplicate_a_foreign_row_a_partial_request_and_a_rollup_mismatch(tmp_path):
    """The checker is not vacuous: each kind of error it looks for, planted in a real store, is
    reported by problems_of() and named in the failure report: an acknowledged record that is
    absent, a record stored twice, rows that nobody sent, a request stored in part, and
    span_rollups that do not count every stored span of the loop as a request."""
    srv = crash_loop.Server(sightline_bin(), tmp_path / "data", tmp_path / "logs", flush_interval="500ms")
    srv.start()

    def post(path: str, body: dict) -> None:
        resp = srv.session.post(srv.otlp_http_url + path, json=body, timeout=10)
        assert crash_loop.judge(resp, "logs" if path == "/v1/logs" else "spans")[0] == crash_loop.ACKED, resp.text

    try:
        now = crash_loop.time.time_ns()
        ledger = crash_loop.Ledger()
        # Sound: 3 server spans, acknowledged, stored once and counted by the rollups.
        sound = ledger.new("spans", 3, cycle=1, sent_at=0.0)
        post("/v1/traces", crash_loop.spans_body(sound, "0" * 16, now))
        ledger.settle(sound, crash_loop.ACKED)
        # A duplicate: the same logs twice, what a replay bug would do.
        doubled = ledger.new("logs", 3, cycle=1, sent_at=0.1)
        for _ in range(2):
            post("/v1/logs", crash_loop.logs_body(doubled, now))
        ledger.settle(doubled, crash_loop.ACKED)
        # A loss: "acknowledged" but never sent.
        lost = ledger.new("logs", 2, cycle=1, sent_at=0.2)
        ledger.settle(lost, crash_loop.ACKED)
        # Rows nobody sent: one id past the end of a request, one outside every id sent.
        stray = crash_loop.record_id("logs", doubled.no, 7)
        outsider = "not sent by the crash loop"
        post("/v1/logs", {"resourceLogs": [{"scopeLogs": [{"logRecords": [
            {"timeUnixNano": str(now), "body": {"stringValue": body}} for body in (stray, outsider)]}]}]})
        # A request stored in part: its answer was cut (unknown), and 2 of its 4 spans are there.
        halved = ledger.new("spans", 4, cycle=1, sent_at=0.3)
        post("/v1/traces", crash_loop.spans_body(crash_loop.Request(halved.no, "spans", 2, 1, 0.3),
                                                 "0" * 16, now))
        ledger.settle(halved, crash_loop.UNKNOWN, "ConnectionError")
        # Spans of the loop that the rollups do not count: internal spans (kind 1) are not requests.
        uncounted = ledger.new("spans", 2, cycle=1, sent_at=0.4)
        post("/v1/traces", crash_loop.spans_body(uncounted, "0" * 16, now, kind=1))
        ledger.settle(uncounted, crash_loop.ACKED)

        check = crash_loop.check_store(srv, ledger)
        assert sorted(m["id"] for m in check["missing"]) == sorted(lost.ids()), check["missing"]
        assert sorted((d["id"], d["count"]) for d in check["duplicates"]) == \
            sorted((rid, 2) for rid in doubled.ids()), check["duplicates"]
        assert sorted(f["id"] for f in check["foreign"]) == ["(1 rows outside the ids sent)", stray], check["foreign"]
        assert check["partial_requests"] == [{"signal": "spans", "request": halved.no, "size": 4, "stored": 2,
                                              "outcome": crash_loop.UNKNOWN}], check["partial_requests"]
        # 3 sound + 2 of the halved request are requests; the 2 internal spans are stored but not.
        assert check["rollups"] == [{"column": "requests", "span_rollups": 5, "spans": 7, "ledger": 7}], \
            check["rollups"]
        problems = ["2 acknowledged records missing", "3 records stored more than once",
                    "2 stored records nobody sent", "1 requests stored in part",
                    "span_rollups count 5 requests, the spans stored are 7, the ledger says 7"]
        assert crash_loop.problems_of(check) == problems

        # The failure report names the seed, the cycle, the ids and the requests they came from.
        cfg = crash_loop.Config(binary=srv.bin, seed=99)
        lives = [{"cycle": 1, "delay_s": 0.5, "long": False}]
        text = crash_loop._evidence(cfg, 1, check, ledger, lives, srv, srv.data_dir, recheck=check)
        assert text.startswith(f"CRASH LOOP FAILED: seed=99 cycle=1 ({', '.join(problems)})"), text
        for rid in lost.ids() + doubled.ids() + [stray]:
            assert rid in text
        for no, what in ((lost.no, "logs x2"), (doubled.no, "logs x3"), (halved.no, "spans x4")):
            assert f"request {no}: {what}, cycle 1" in text, text
        assert '"delay_s": 0.5' in text and '"span_rollups": 5' in text
    finally:
        srv.kill()
