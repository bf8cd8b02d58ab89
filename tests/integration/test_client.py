"""The batch-scoring CLI (`python -m client`, a real subprocess) against real servers on 127.0.0.1.

"Right" means: the value the model gives for that row, computed here independently with onnxruntime
in-process on the same model repository (smallest bucket that fits, left padded). Where the in-process top
two probabilities are within 1e-4 (a tie a different batch composition may flip) either value is right.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from contract.vocab import Vocabulary
from model.data import generate
from tests.integration.server import REPO_ROOT, Server, free_port, repository_with, start_server

TIE = 1e-4


@dataclass
class Reference:
    sequences: list[str]
    labels: list[str]
    values: list[str]
    probs: np.ndarray  # (N, num_classes)
    classes: list[str]

    def accepts(self, i: int, value: str | None) -> bool:
        if value == self.values[i]:
            return True
        if value not in self.classes:
            return False
        p = self.probs[i]
        return bool(p.max() - p[self.classes.index(value)] < TIE)


def reference(sequences: list[str], repository: Path) -> tuple[list[str], np.ndarray, list[str]]:
    import onnxruntime as ort

    from contract import MetadataKeys

    buckets = {}
    for onnx_path in repository.glob("fastweights_t*/*/model.onnx"):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        buckets[int(meta[MetadataKeys.SEQ_LEN])] = (session, meta)
    lengths = sorted(buckets)
    meta = buckets[lengths[0]][1]
    vocab = Vocabulary(json.loads(meta[MetadataKeys.VOCAB]))
    classes = json.loads(meta[MetadataKeys.ANSWER_CLASSES])
    probs = np.zeros((len(sequences), len(classes)), dtype=np.float64)
    by_bucket: dict[int, list[int]] = {}
    for i, s in enumerate(sequences):
        by_bucket.setdefault(next(t for t in lengths if t >= len(s)), []).append(i)
    for t, rows in by_bucket.items():
        session = buckets[t][0]
        tokens = np.array([vocab.encode(sequences[i], t) for i in rows], dtype=np.int64)
        for lo in range(0, len(rows), 1024):
            logits = session.run(["logits"], {"tokens": tokens[lo : lo + 1024]})[0].astype(np.float64)
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs[rows[lo : lo + 1024]] = e / e.sum(axis=1, keepdims=True)
    values = [classes[j] for j in probs.argmax(axis=1)]
    return values, probs, classes


@pytest.fixture(scope="module")
def data(model_repository: Path) -> Reference:
    batch = generate(100_000, 1, 8, seed=20261128)
    sequences = batch.sequences()
    values, probs, classes = reference(sequences, model_repository)
    return Reference(sequences, [str(t) for t in batch.targets.tolist()], values, probs, classes)


def write_jsonl(path: Path, ref: Reference, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "sequence": ref.sequences[i], "label": ref.labels[i]}) + "\n")
    return path


def write_text(path: Path, ref: Reference, n: int) -> Path:
    path.write_text("\n".join(ref.sequences[:n]) + "\n")
    return path


def client_cmd(inp: Path | str, out: Path | str, *urls: str, extra: tuple[str, ...] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "client", str(inp), "-o", str(out), "--no-progress"]
    for u in urls:
        cmd += ["--url", u]
    return cmd + list(extra)


def run_client(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_complete_and_right(out: Path, ref: Reference, n: int, ids: bool = True) -> list[dict]:
    got = records(out)
    assert [r["line"] for r in got] == list(range(1, n + 1)), "every row exactly once, in input order"
    wrong = [r["line"] for r in got if "error" in r or not ref.accepts(r["line"] - 1, r["value"])]
    assert wrong == [], f"{len(wrong)} rows with a wrong answer or an error, first: {wrong[:5]}"
    if ids:
        assert all(r["id"] == f"r{r['line'] - 1}" for r in got)
    return got


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while count_lines(path) < n:
        assert proc.poll() is None, f"client ended (rc {proc.returncode}) before {n} rows were written"
        assert time.monotonic() < deadline, f"fewer than {n} rows after {timeout} s"
        time.sleep(0.02)


def kill_mid_run(cmd: list[str], out: Path, n: int, at: int = 3_000) -> int:
    """Start the client, SIGKILL it once `at` rows are written and tear its last row (the worst a crash can
    leave); the rows written before the kill."""
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stderr=subprocess.DEVNULL)
    try:
        wait_for_lines(out, at, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = count_lines(out)
    assert at <= before < n, "the client must be killed mid-run"
    with out.open("ab") as f:
        f.write(b'{"line":' + str(before + 1).encode() + b',"id":"r')
    return before


def test_100k_rows_are_scored_completely_and_correctly_with_labels_summarised(
    server: Server, data: Reference, tmp_path: Path
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", data, 100_000)
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    done = run_client(client_cmd(inp, out, server.url, extra=("--summary-json", str(summary))))
    assert done.returncode == 0, done.stderr
    got = assert_complete_and_right(out, data, 100_000)
    s = json.loads(summary.read_text())
    assert (s["rows"], s["errors"], s["exit_code"]) == (100_000, 0, 0)
    correct = sum(r["value"] == data.labels[r["line"] - 1] for r in got)
    assert s["accuracy"] == pytest.approx(correct / 100_000)
    assert sum(c["rows"] for c in s["accuracy_by_pairs"].values()) == 100_000
    assert set(s["accuracy_by_pairs"]) == {str(k) for k in range(1, 9)}
    assert all(0.0 < r["confidence"] <= 1.0 and 1 <= r["num_pairs"] <= 8 for r in got)
    print(f"100k rows: {s['rows_per_s']} rows/s, {s['requests']} requests")  # visible with -s
    assert "accuracy" in done.stderr and "rows/s" in done.stderr


@pytest.mark.parametrize("protocol", ["rest", "v2", "grpc"])
def test_fresh_rows_of_every_k_up_to_26_are_scored_right_over_every_protocol(
    server: Server, model_repository: Path, tmp_path: Path, protocol: str
) -> None:
    batch = generate(26 * 200, 1, 26, seed=26200)  # a fresh seed: 200 rows per K on average
    sequences = batch.sequences()
    values, probs, classes = reference(sequences, model_repository)
    ref = Reference(sequences, [str(t) for t in batch.targets.tolist()], values, probs, classes)
    n = len(sequences)
    inp, out, summary = (
        write_jsonl(tmp_path / "in.jsonl", ref, n),
        tmp_path / "out.jsonl",
        tmp_path / "s.json",
    )
    extra = ("--protocol", protocol, "--summary-json", str(summary))
    url = server.grpc_target if protocol == "grpc" else server.url
    done = run_client(client_cmd(inp, out, url, extra=extra))
    assert done.returncode == 0, done.stderr
    got = assert_complete_and_right(out, ref, n)
    assert {r["num_pairs"] for r in got} == set(range(1, 27))
    s = json.loads(summary.read_text())
    assert set(s["accuracy_by_pairs"]) == {str(k) for k in range(1, 27)}
    wrong = sum(r["value"] != ref.labels[r["line"] - 1] for r in got)
    assert wrong <= 1, wrong  # 2 errors in 520 000 were measured over K 1..26 (docs/results.md s. 4)


def test_server_killed_and_restarted_twice_the_output_has_every_row_once_and_right(
    model_repository: Path, data: Reference, tmp_path: Path
) -> None:
    n = 40_000
    port = free_port()
    # A slowed server (10 ms per onnxruntime run of <= 100 rows) so that the run outlives two restarts.
    env = {"FWS_PORT": str(port), "FWS_SIMULATED_RUN_DELAY_MS": "10"}
    repo = repository_with(tmp_path / "repo", model_repository, max_batch_size=100)

    def start() -> Server:
        srv = start_server(env, repository=repo, wait=False)
        srv.port, srv.url = port, f"http://127.0.0.1:{port}"  # start_server's own port is overridden by env
        srv.wait_ready()
        return srv

    inp, out, summary = write_text(tmp_path / "in.txt", data, n), tmp_path / "out.jsonl", tmp_path / "s.json"
    srv = start()
    cmd = client_cmd(inp, out, srv.url, extra=("--chunk-size", "200", "--concurrency", "2"))
    proc = subprocess.Popen([*cmd, "--summary-json", str(summary)], cwd=REPO_ROOT, stderr=subprocess.PIPE)
    try:
        wait_for_lines(out, n // 4, proc)
        srv.proc.kill()  # a crash: in-flight requests are cut off
        srv.proc.wait(10)
        time.sleep(0.5)
        srv = start()
        wait_for_lines(out, n * 5 // 8, proc)
        srv.stop()  # a graceful restart: SIGTERM drains, then the port is closed for a while
        time.sleep(0.5)
        srv = start()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        srv.stop()
    assert proc.returncode == 0, stderr.decode()
    assert_complete_and_right(out, data, n, ids=False)
    s = json.loads(summary.read_text())
    assert s["retries"] > 0 and s["rows"] == n


def test_malformed_rows_are_reported_with_their_line_numbers_and_the_rest_answered(
    server: Server, tmp_path: Path
) -> None:
    lines = [
        '{"id": "ok1", "sequence": "c9k8j3f1??c"}',  # 1
        "{not json",  # 2
        "",  # 3 blank: skipped
        '{"id": "dup", "sequence": "c9c8??c"}',  # 4
        '{"id": "chr", "sequence": "c9k8??C"}',  # 5
        '{"id": "qnf", "sequence": "c9k8??z"}',  # 6
        '{"id": "long", "sequence": "' + "a1" * 200 + '??a"}',  # 7: past the longest input accepted
        '{"id": "extra", "sequence": "a1??a", "bogus": 1}',  # 8
        '["a1??a"]',  # 9
        '{"id": "pairs", "pairs": [["c", "9"], ["k", "8"]], "query": "k"}',  # 10
        '{"id": "empty", "sequence": ""}',  # 11
        '{"id": "ok2", "sequence": "a1??a"}',  # 12
    ]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    done = run_client(client_cmd(inp, out, server.url, extra=("--summary-json", str(tmp_path / "s.json"))))
    assert done.returncode == 1, done.stderr  # finished, with row errors
    got = {r["line"]: r for r in records(out)}
    assert sorted(got) == [1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    errors = {line: r["error"]["code"] for line, r in got.items() if "error" in r}
    assert errors == {
        2: "invalid_json",
        4: "duplicate_key",
        5: "unknown_character",
        6: "query_not_found",
        7: "too_long",
        8: "invalid_request",
        9: "invalid_row",
        11: "empty",
    }
    assert all(got[line]["value"] in list("0123456789") for line in (1, 10, 12))
    assert got[10]["num_pairs"] == 2 and got[4]["id"] == "dup"
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["errors"] == 8 and [e["line"] for e in s["first_errors"]] == sorted(errors)
    assert "line 2" in done.stderr and "duplicate_key" in done.stderr


def test_csv_in_csv_out_reports_bad_records_by_line(server: Server, tmp_path: Path) -> None:
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    inp.write_text('id,sequence,label\na,c9k8??c,9\nb,"c9,k8??c",9\nc\nd,k8c9??k,8\n')
    done = run_client(client_cmd(inp, out, server.url))
    assert done.returncode == 1, done.stderr
    rows = out.read_text().splitlines()
    assert rows[0].startswith("line,id,value,confidence,num_pairs,label,correct,error_code")
    by_line = {int(r.split(",", 1)[0]): r for r in rows[1:]}
    assert sorted(by_line) == [2, 3, 4, 5]
    assert ",unknown_character," in by_line[3] and ",invalid_row," in by_line[4]
    assert by_line[2].startswith("2,a,") and by_line[5].startswith("5,d,")


def test_resume_after_a_killed_client_scores_every_row_exactly_once(
    server: Server, data: Reference, tmp_path: Path
) -> None:
    n = 30_000
    inp, out, summary = (
        write_jsonl(tmp_path / "in.jsonl", data, n),
        tmp_path / "out.jsonl",
        tmp_path / "s.json",
    )
    cmd = client_cmd(inp, out, server.url, extra=("--chunk-size", "50", "--concurrency", "1"))
    before = kill_mid_run(cmd, out, n)
    done = run_client(client_cmd(inp, out, server.url, extra=("--resume", "--summary-json", str(summary))))
    assert done.returncode == 0, done.stderr
    assert f"resuming after input line {before}" in done.stderr
    assert_complete_and_right(out, data, n)
    s = json.loads(summary.read_text())
    assert (s["rows"], s["resumed_rows"], s["rows_this_run"]) == (n, before, n - before)
    # Resuming a finished output scores nothing and changes nothing.
    finished = out.read_bytes()
    again = run_client(client_cmd(inp, out, server.url, extra=("--resume",)))
    assert again.returncode == 0 and out.read_bytes() == finished


def test_an_existing_output_is_never_overwritten_without_resume_or_overwrite(server: Server, tmp_path: Path):
    inp, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    inp.write_text("a1??a\n")
    out.write_text("precious\n")
    done = run_client(client_cmd(inp, out, server.url))
    assert done.returncode == 2 and "--resume" in done.stderr
    assert out.read_text() == "precious\n"


def test_stdin_to_stdout_and_a_dead_replica_only_costs_retries(server: Server, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cmd = client_cmd(
        "-", "-", dead, server.url, extra=("--chunk-size", "2", "--quiet", "--backoff-base", "0.01")
    )
    done = run_client(cmd, input="c9k8??c\nk8c9??k\n\nb2??b\na1b2??b\n")
    assert done.returncode == 0, done.stderr
    got = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["line"], r["id"]) for r in got] == [(1, 1), (2, 2), (4, 4), (5, 5)]
    assert all(r["value"] in list("0123456789") for r in got)


def test_an_unreachable_server_fails_the_run_with_exit_code_3_and_a_resume_hint(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    inp.write_text("a1??a\n")
    url = f"http://127.0.0.1:{free_port()}"
    done = run_client(client_cmd(inp, out, url, extra=("--max-attempts", "3", "--backoff-base", "0.01")))
    assert done.returncode == 3, done.stderr
    assert "3 attempts" in done.stderr and "--resume" in done.stderr


def test_the_v2_protocol_option_encodes_from_the_v2_metadata_and_gives_the_same_answers(
    server: Server, data: Reference, tmp_path: Path
) -> None:
    n = 10_000
    inp, out, summary = (
        write_jsonl(tmp_path / "in.jsonl", data, n),
        tmp_path / "out.jsonl",
        tmp_path / "s.json",
    )
    with inp.open("a") as f:  # what V2 can still catch client-side
        f.write('{"id": "bad", "sequence": "c9k8??C"}\n{"id": "long", "sequence": "' + "a1" * 27 + '??a"}\n')
    done = run_client(
        client_cmd(inp, out, server.url, extra=("--protocol", "v2", "--summary-json", str(summary)))
    )
    assert done.returncode == 1, done.stderr
    got = records(out)
    assert [r["error"]["code"] for r in got[n:]] == ["unknown_character", "too_long"]
    (out.with_name("answers.jsonl")).write_text("".join(json.dumps(r) + "\n" for r in got[:n]))
    answered = assert_complete_and_right(out.with_name("answers.jsonl"), data, n)
    assert all(r["num_pairs"] == (len(data.sequences[r["line"] - 1]) - 3) // 2 for r in answered)
    s = json.loads(summary.read_text())
    assert s["requests"] >= 3 * (n // 512)  # a request per bucket (K = 1, 2-4, 5-8) per chunk
