"""The benchmarks' parts that need no server (seconds; nothing is timed or compared); the ones that start
real servers are in tests/integration/test_bench_servers.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench import engine_sweep, memory_forms, serving


def test_batch_size_distribution_is_the_difference_of_two_cumulative_scrapes():
    before = {1.0: 5.0, 4.0: 5.0, 16.0: 5.0, math.inf: 5.0}
    after = {1.0: 7.0, 4.0: 10.0, 16.0: 14.0, math.inf: 15.0}
    assert serving.distribution(before, after) == {"1": 2, "2-4": 3, "5-16": 4, ">16": 1}


def test_memory_forms_runs_and_the_two_forms_agree(tmp_path: Path):
    out = tmp_path / "forms.json"
    assert (
        memory_forms.main(["--lengths", "4,8", "--batch-size", "2", "--repeats", "1", "--json", str(out)])
        == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert [r["T"] for r in rows] == [4, 8]
    assert all(r["max_abs_diff"] < 1e-4 for r in rows)


def test_engine_sweep_runs_by_batch_and_by_bucket(tmp_path: Path):
    out, png = tmp_path / "engine.json", tmp_path / "engine.png"
    args = [
        "--batch-sizes",
        "1,2",
        "--rounds",
        "1",
        "--round-seconds",
        "0.01",
        "--no-compile",
        "--threads",
        "1",
    ]
    assert engine_sweep.main([*args, "--json", str(out), "--plot", str(png)]) == 0
    result = json.loads(out.read_text())
    assert "ort" in result["by_batch"]["seconds_per_call"]
    assert len(result["by_bucket"]["seconds_per_call"]) >= 2
    assert png.stat().st_size > 0


def test_service_env_takes_fws_settings_only():
    import argparse

    import pytest

    assert serving.env_assignment("FWS_GRPC_ENABLED=false") == ("FWS_GRPC_ENABLED", "false")
    for bad in ("GRPC_ENABLED=false", "FWS_GRPC_ENABLED"):
        with pytest.raises(argparse.ArgumentTypeError):
            serving.env_assignment(bad)


def test_the_v2_peers_compute_what_the_service_answers_for_the_benchmarks_v2_bodies():
    """The body every server gets in `v2peers`, and the peers' shared model code (bench/peers/v2_common.py)
    against the service's own V2 answer: same model, same logits, same response shape."""
    import numpy as np
    from fastapi.testclient import TestClient

    from bench.peers import v2_common
    from service.main import create_app

    sess = v2_common.session()
    with TestClient(create_app()) as client:
        for seq in serving.SEQUENCES:
            body = json.loads(serving.v2_body(seq))
            answer = client.post(f"/v2/models/{serving.V2_MODEL}/infer", json=body)
            assert answer.status_code == 200, answer.text
            (theirs,) = [o for o in answer.json()["outputs"] if o["name"] == "logits"]
            ours = v2_common.response(v2_common.run(sess, v2_common.tokens_of(body)))["outputs"][0]
            assert ours["shape"] == theirs["shape"] == [1, 10]
            np.testing.assert_allclose(ours["data"], theirs["data"], rtol=1e-5, atol=1e-6)


def test_grpc_variants_read_a_name_and_the_environment_of_its_server():
    from bench.grpc_variants import parse_variant

    assert parse_variant("base:") == parse_variant("base")
    variant = parse_variant("delay:FWS_MAX_QUEUE_DELAY_MS=2;GRPC_POLL_STRATEGY=poll")
    assert (variant.name, variant.env) == (
        "delay",
        {"FWS_MAX_QUEUE_DELAY_MS": "2", "GRPC_POLL_STRATEGY": "poll"},
    )
