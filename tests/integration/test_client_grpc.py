"""`python -m client --protocol grpc` (a real subprocess) against real servers' gRPC ports on 127.0.0.1.

The gRPC path encodes like `--protocol v2` and must write the very same output; the rest is what every
protocol of the client promises: resume, retries on overload, errors as exit codes, the API key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from model.data import generate
from tests.integration.server import Server, free_port, start_server
from tests.integration.test_client import (
    Reference,
    assert_complete_and_right,
    client_cmd,
    kill_mid_run,
    records,
    reference,
    run_client,
    write_jsonl,
    write_text,
)

GRPC = ("--protocol", "grpc")


@pytest.fixture(scope="module")
def data(model_repository: Path) -> Reference:
    batch = generate(30_000, 1, 8, seed=20261206)
    sequences = batch.sequences()
    values, probs, classes = reference(sequences, model_repository)
    return Reference(sequences, [str(t) for t in batch.targets.tolist()], values, probs, classes)


def test_grpc_writes_the_same_output_as_v2_over_http_and_every_answer_is_right(
    server: Server, data: Reference, tmp_path: Path
) -> None:
    n = 10_000
    inp = write_jsonl(tmp_path / "in.jsonl", data, n)
    with inp.open("a") as f:  # rows the client itself refuses: the same errors, at the same lines
        f.write('{"id": "bad", "sequence": "c9k8??C"}\n{"id": "long", "sequence": "' + "a1" * 27 + '??a"}\n')
    # One request in flight: the server batches the same rows together for both runs, so even the rounded
    # confidences are bit for bit the same.
    one = ("--concurrency", "1")
    over_http, over_grpc, summary = tmp_path / "v2.jsonl", tmp_path / "grpc.jsonl", tmp_path / "s.json"
    http_run = run_client(client_cmd(inp, over_http, server.url, extra=("--protocol", "v2", *one)))
    grpc_run = run_client(
        client_cmd(inp, over_grpc, server.grpc_target, extra=(*GRPC, *one, "--summary-json", str(summary)))
    )
    assert (http_run.returncode, grpc_run.returncode) == (1, 1), grpc_run.stderr
    assert over_grpc.read_bytes() == over_http.read_bytes()
    got = records(over_grpc)
    assert [r["error"]["code"] for r in got[n:]] == ["unknown_character", "too_long"]
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps(r) + "\n" for r in got[:n]))
    assert_complete_and_right(answers, data, n)
    s = json.loads(summary.read_text())
    assert (s["rows"], s["errors"], s["retries"]) == (n + 2, 2, 0)


def test_a_grpc_run_killed_midway_resumes_with_every_row_exactly_once(
    server: Server, data: Reference, tmp_path: Path
) -> None:
    n = 30_000
    inp, out, summary = (
        write_jsonl(tmp_path / "in.jsonl", data, n),
        tmp_path / "out.jsonl",
        tmp_path / "s.json",
    )
    cmd = client_cmd(inp, out, server.grpc_target, extra=(*GRPC, "--chunk-size", "50", "--concurrency", "1"))
    before = kill_mid_run(cmd, out, n)
    resume = (*GRPC, "--resume", "--summary-json", str(summary))
    done = run_client(client_cmd(inp, out, server.grpc_target, extra=resume))
    assert done.returncode == 0, done.stderr
    assert f"resuming after input line {before}" in done.stderr
    assert_complete_and_right(out, data, n)
    s = json.loads(summary.read_text())
    assert (s["rows"], s["resumed_rows"], s["rows_this_run"]) == (n, before, n - before)


def test_calls_beyond_the_servers_limit_are_retried_until_every_row_is_answered(
    model_repository: Path, data: Reference, tmp_path: Path
) -> None:
    # One call at a time in the whole server and 8 in flight here: most calls end RESOURCE_EXHAUSTED at once.
    n = 4_000
    env = {"FWS_GRPC_MAX_CONCURRENT_RPCS": "1", "FWS_SIMULATED_RUN_DELAY_MS": "2"}
    inp, out, summary = write_text(tmp_path / "in.txt", data, n), tmp_path / "out.jsonl", tmp_path / "s.json"
    with start_server(env, repository=model_repository) as srv:
        extra = (*GRPC, "--chunk-size", "100", "--concurrency", "8", "--backoff-base", "0.005")
        done = run_client(
            client_cmd(inp, out, srv.grpc_target, extra=(*extra, "--summary-json", str(summary)))
        )
    assert done.returncode == 0, done.stderr
    assert_complete_and_right(out, data, n, ids=False)
    s = json.loads(summary.read_text())
    assert s["retries"] > 0 and s["rows"] == n


def test_a_request_over_the_servers_message_limit_is_split_not_retried(
    model_repository: Path, data: Reference, tmp_path: Path
) -> None:
    # 16 KiB: a chunk's rows of one bucket (~330 rows of T = 11 or ~500 of T = 19) are 29-76 KiB; halves of
    # halves pass.
    n = 2_000
    inp, out, summary = write_text(tmp_path / "in.txt", data, n), tmp_path / "out.jsonl", tmp_path / "s.json"
    with start_server({"FWS_GRPC_MAX_MESSAGE_BYTES": "16384"}, repository=model_repository) as srv:
        extra = (*GRPC, "--chunk-size", "1000", "--max-attempts", "2", "--summary-json", str(summary))
        done = run_client(client_cmd(inp, out, srv.grpc_target, extra=extra))
    assert done.returncode == 0, done.stderr
    assert_complete_and_right(out, data, n, ids=False)
    s = json.loads(summary.read_text())
    # Calls counted: discovery (1 RepositoryIndex + 1 ModelConfig per model: 11) and infer. Unsplit, K 1..8 in
    # 2 chunks makes at most 2 x 3 infer calls (T 5/11/19): 17 in all. Split, ~228 KB of tokens in requests of
    # at most 16 KiB need over 14 infer calls that pass, plus the refused ones (50 measured).
    assert s["retries"] == 0 and s["requests"] > 30


def test_the_api_key_is_sent_as_metadata_and_a_refused_key_fails_the_run_resumably(
    model_repository: Path, tmp_path: Path
) -> None:
    inp, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    inp.write_text("c9k8??c\nk8c9??k\n")
    with start_server({"FWS_API_KEY": "s3cret"}, repository=model_repository) as srv:
        refused = run_client(client_cmd(inp, out, srv.grpc_target, extra=(*GRPC, "--api-key", "wrong")))
        assert refused.returncode == 3, refused.stderr
        assert "UNAUTHENTICATED" in refused.stderr and "--resume" in refused.stderr
        assert "retries: 0" in refused.stderr  # a refused key is not worth a retry
        env = {**os.environ, "FWS_API_KEY": "s3cret"}
        done = run_client(client_cmd(inp, out, srv.grpc_target, extra=(*GRPC, "--resume")), env=env)
    assert done.returncode == 0, done.stderr
    assert [(r["line"], r["value"]) for r in records(out)] == [(1, "9"), (2, "8")]


def test_an_unreachable_grpc_server_fails_with_exit_code_3_after_the_attempts(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    inp.write_text("a1??a\n")
    extra = (*GRPC, "--max-attempts", "3", "--backoff-base", "0.01", "--timeout", "5")
    done = run_client(client_cmd(inp, out, f"grpc://127.0.0.1:{free_port()}", extra=extra))
    assert done.returncode == 3, done.stderr
    assert "3 attempts" in done.stderr and "UNAVAILABLE" in done.stderr


def test_an_http_url_with_protocol_grpc_is_a_usage_error_that_says_what_to_give(tmp_path: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text("a1??a\n")
    done = run_client(client_cmd(inp, tmp_path / "out.jsonl", "http://127.0.0.1:8000", extra=GRPC))
    assert done.returncode == 2
    assert "host:port" in done.stderr and "8001" in done.stderr
