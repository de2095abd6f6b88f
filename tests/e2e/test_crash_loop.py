"""Crash safety, short form: SIGKILL the server at random moments under load, 10 times.

Concurrent senders post OTLP/JSON spans and logs with ids that are never reused; the server is
killed with SIGKILL after a random delay (seeded), restarted on the same data folder, and the
stored rows are checked against what was acknowledged: every acknowledged record present, none
stored twice, none that nobody sent. The long form (hundreds of cycles) is the same code run as
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
    # The loop must have tested something: acknowledged writes before kills, and requests cut
    # off by a kill (whose records may or may not be stored, but never twice).
    assert summary["acknowledged_records"] > 1000, summary["acknowledged_records"]
    assert summary["unknown_records"] > 0, "no kill cut a request off: the kills missed the load"
    assert summary["checks"] >= 3  # after cycle 5, after the last kill, after SIGTERM + restart
    assert summary["total_seconds"] < 60, summary["total_seconds"]


def test_the_check_catches_a_loss_and_a_duplicate(tmp_path):
    """The checker is not vacuous: a record stored twice and an acknowledged one that is absent
    are both reported, with their ids."""
    srv = crash_loop.Server(sightline_bin(), tmp_path / "data", tmp_path / "logs", flush_interval="500ms")
    srv.start()
    try:
        ledger = crash_loop.Ledger()
        sent = ledger.new("spans", 3, cycle=1, sent_at=0.0)
        body = crash_loop.spans_body(sent, "0" * 16, crash_loop.time.time_ns())
        for _ in range(2):  # the same ids twice: what a replay bug would do
            resp = srv.session.post(srv.otlp_http_url + "/v1/traces", json=body, timeout=10)
            assert crash_loop.judge(resp, "spans")[0] == crash_loop.ACKED, resp.text
        ledger.settle(sent, crash_loop.ACKED)
        lost = ledger.new("logs", 2, cycle=1, sent_at=0.0)  # "acknowledged" but never sent
        ledger.settle(lost, crash_loop.ACKED)

        check = crash_loop.check_store(srv, ledger)
        assert sorted(d["id"] for d in check["duplicates"]) == sorted(sent.ids()), check["duplicates"]
        assert all(d["count"] == 2 for d in check["duplicates"])
        assert sorted(m["id"] for m in check["missing"]) == sorted(lost.ids()), check["missing"]
        assert check["foreign"] == []
        assert crash_loop.problems_of(check) == ["2 acknowledged records missing", "3 records stored more than once"]

        # The failure report names the seed, the cycle, the ids and the requests they came from.
        cfg = crash_loop.Config(binary=srv.bin, seed=99)
        lives = [{"cycle": 1, "delay_s": 0.5, "long": False}]
        text = crash_loop._evidence(cfg, 1, check, ledger, lives, srv, srv.data_dir, recheck=check)
        assert text.startswith("CRASH LOOP FAILED: seed=99 cycle=1 (2 acknowledged records missing, "
                               "3 records stored more than once)"), text
        for rid in lost.ids() + sent.ids():
            assert rid in text
        assert f"request {lost.no}: logs x2, cycle 1" in text and '"delay_s": 0.5' in text
    finally:
        srv.kill()
