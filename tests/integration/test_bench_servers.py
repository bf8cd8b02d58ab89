"""The benchmarks that start real servers (uvicorn, gRPC, redis-server) run end to end with minimal settings
(seconds; nothing is timed or compared). Their pure parts are tested in tests/unit/test_bench_smoke.py."""

from __future__ import annotations

import json
from pathlib import Path

from bench import serving


def test_serving_overhead_runs_against_real_servers(tmp_path: Path):
    out = tmp_path / "serving.json"
    args = ["--parts", "overhead", "--clients", "2", "--duration", "1", "--loadgen", "httpx", "--no-install"]
    assert serving.main([*args, "--json", str(out)]) == 0
    cells = json.loads(out.read_text())["overhead"]
    assert set(cells) == {"floor", "naive", "service"}
    for name, per in cells.items():
        assert per["2"]["requests"] > 0, name
        assert per["2"]["errors"] == 0, name
        assert 1.0 < per["2"]["extra"]["cpu_us_per_request"] < 1e6, name  # the server's own CPU was read


def test_serving_overhead_compares_several_trees_in_rounds_with_the_settings_given(tmp_path: Path):
    out = tmp_path / "serving.json"
    root = Path(serving.__file__).resolve().parent.parent
    args = ["--parts", "overhead", "--clients", "1", "--duration", "1", "--rounds", "2", "--skip-references"]
    args += ["--loadgen", "httpx", "--no-install", "--baseline-tree", str(root), "--baseline-tree", str(root)]
    # A body limit no request fits: every server must answer 413, so each one got the setting.
    args += ["--service-env", "FWS_MAX_BODY_BYTES=8"]
    assert serving.main([*args, "--json", str(out)]) == 0
    cells = json.loads(out.read_text())["overhead"]
    first, second = f"service ({root.name})", f"service ({root.name}) #2"
    assert set(cells) == {"service", first, second}  # no floor or naive
    for name, per in cells.items():
        cell = per["1"]
        assert cell["requests"] > 0 and cell["errors"] == cell["requests"], name
        assert len(cell["extra"]["rounds_rps"]) == 2, name
        assert len(cell["extra"]["rounds_cpu_us_per_request"]) == 2, name
        assert cell["extra"]["rounds_mean_batch_rows"] == [0.0, 0.0], name  # every request refused: no run


def test_grpc_bench_messages_and_stream_load_against_a_real_server():
    import asyncio
    import struct

    import httpx

    from bench import grpc_stream_load, grpc_vs_http
    from inference_grpc import grpc_service_pb2 as pb
    from tests.integration.server import start_server

    with start_server({"FWS_LOG_LEVEL": "warning"}) as server:
        metadata = httpx.get(f"{server.url}/v2/models/{grpc_vs_http.MODEL}").json()
        tokens = grpc_vs_http.tokens_for(metadata, 3)
        message = grpc_vs_http.grpc_message(tokens)
        assert message[0] == 0 and struct.unpack(">I", message[1:5])[0] == len(message) - 5  # gRPC framing
        request = pb.ModelInferRequest.FromString(message[5:])
        assert list(request.inputs[0].shape) == [3, 11]
        assert request.raw_input_contents[0] == tokens.astype("<i8").tobytes()
        body = json.loads(grpc_vs_http.http_body(tokens))
        assert body["inputs"][0]["data"] == tokens.ravel().tolist()
        result = asyncio.run(grpc_stream_load.run(server.grpc_target, message[5:], clients=2, duration=1.0))
        assert result["requests"] > 0 and result["errors"] == 0
        bad = pb.ModelInferRequest(model_name="no_such_model")
        bad.inputs.add(name="tokens", datatype="INT64", shape=[1, 11]).contents.int64_contents.extend(
            [0] * 11
        )
        failed = asyncio.run(grpc_stream_load.run(server.grpc_target, bad.SerializeToString(), 1, 0.5))
        assert failed["errors"] > 0 and failed["requests"] == 0  # an error answer is counted as one


def test_sessions_bench_runs_against_a_real_server_with_both_stores(tmp_path: Path):
    from bench import sessions

    out = tmp_path / "sessions.json"
    args = ["--lengths", "1,2", "--samples", "3", "--clients", "2", "--seconds", "0.2"]
    assert sessions.main([*args, "--memory-sessions", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"memory", "redis"}  # redis-server: installed by `make redis`
    for store in result.values():
        assert store["lengths"] == [1, 2] and store["k_max"] >= 2
        assert all(len(store["latency"][k]["1"]) == 3 for k in ("append", "query", "stateless"))
        assert store["throughput"]["appends_per_s"] > 0 and store["bytes_per_session"] != 0


def test_repository_footprint_starts_a_real_server_and_reports_its_ready_time_and_memory(capsys):
    from bench import repository_footprint

    repo = Path(__file__).resolve().parents[2] / "model_repository"
    assert repository_footprint.main([str(repo), "--repeats", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert "10 buckets (T = 5, 11, 19, 25, 31, 37, 41, 47, 51, 55, sum 322) + stream model: ready in" in line
    assert float(line.rsplit("RSS median ", 1)[1].split()[0]) > 50  # MiB: a server with ten sessions loaded
