"""bench/edge_overhead.py runs: both protocols parse the requests it feeds them (no timing claims)."""

from __future__ import annotations

from bench.edge_overhead import REQUEST, _Guarded, _Sink, per_request_us


def test_both_protocols_parse_the_benchmark_requests():
    for kind in (_Sink, _Guarded):
        assert per_request_us(kind, 200) > 0


def test_the_guard_really_sees_the_requests(monkeypatch):
    seen = []
    monkeypatch.setattr(_Sink, "on_message_complete", lambda self: seen.append(1))
    per_request_us(_Guarded, 50)
    assert len(seen) == 50 and REQUEST.endswith(b'{"sequence": "a1??a"}')
