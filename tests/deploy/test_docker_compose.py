"""The compose deployment, for real: two replicas behind nginx, requests on 127.0.0.1, failover, down.

Run by `make docker-test` (scripts/docker-test.sh), which builds the images from locally made base images and
sets FWS_DOCKER_IMAGE / FWS_DOCKER_LB_IMAGE. Every request goes to the load balancer's published port on
127.0.0.1; the replicas are told apart by nginx's access log, which records for each request id the replica
that answered (its address on the compose network, matched against `docker inspect`): nginx sends no internal
address to clients.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
QUERY = {"sequence": "c9k8j3f1??c"}
HEALTHY_TIMEOUT_S = 120
REQUESTS = 24


def compose_command() -> list[str]:
    """Compose v1 (`docker-compose`, what Debian has) or the v2 plugin (`docker compose`)."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return ["docker", "compose"]
    raise RuntimeError("neither docker-compose nor the docker compose plugin is installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> str:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def inspect(container: str) -> dict:
    return json.loads(run(["docker", "inspect", container]))[0]


def health(container: str) -> str:
    state = inspect(container)["State"]
    return state["Health"]["Status"] if "Health" in state else state["Status"]


def replica_address(container: str) -> str:
    networks = inspect(container)["NetworkSettings"]["Networks"]
    (network,) = networks.values()
    return f"{network['IPAddress']}:8000"


@dataclass
class Stack:
    compose: list[str]
    env: dict[str, str]
    base_url: str
    grpc_target: str = ""

    def containers(self, service: str) -> list[str]:
        return run([*self.compose, "ps", "-q", service], env=self.env).split()

    def wait_healthy(self, containers: list[str], timeout: float = HEALTHY_TIMEOUT_S) -> float:
        t0 = time.monotonic()
        while True:
            states = {c[:12]: health(c) for c in containers}
            if all(s == "healthy" for s in states.values()):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"replicas not healthy after {timeout:.0f} s: {states}\n{self.logs()}")
            time.sleep(0.5)

    def logs(self) -> str:
        done = subprocess.run(
            [*self.compose, "logs", "--no-color", "--tail", "40"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.stdout + done.stderr

    def retrieve_many(self, n: int) -> list[httpx.Response]:
        # A fresh connection per request: what new clients see (nginx balances per request anyway).
        out = []
        for _ in range(n):
            with httpx.Client(base_url=self.base_url, timeout=15) as client:
                rid = f"docker-test-{uuid.uuid4().hex}"
                out.append(client.post("/v1/retrieve", json=QUERY, headers={"X-Request-ID": rid}))
        return out

    def served_by(self, responses: list[httpx.Response]) -> list[str]:
        """The replicas (address:port, in the order tried) nginx sent each response's request to."""
        assert all("x-upstream-addr" not in r.headers for r in responses)  # no internal address sent out
        return self.upstreams([r.headers["x-request-id"] for r in responses])

    def upstreams(self, rids: list[str]) -> list[str]:
        """The replicas nginx sent the requests (or gRPC calls) with these request ids to, from its log."""
        deadline = time.monotonic() + 10
        while True:  # (the access log line is written once the response is sent: give it a moment)
            logs = run([*self.compose, "logs", "--no-color", "lb"], env=self.env)
            # (tried in order, ", " between them; " : " where @failover sent the request on once more)
            found = re.findall(r"upstream=(.*?) ust=.* rid=(\S+)", logs)
            upstream = {rid: addr.replace(" : ", ", ") for addr, rid in found}
            if all(rid in upstream for rid in rids) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        missing = [rid for rid in rids if rid not in upstream]
        assert not missing, f"no access-log line for {missing}"
        return [upstream[rid] for rid in rids]


@pytest.fixture(scope="module")
def stack() -> Stack:
    image = os.environ.get("FWS_DOCKER_IMAGE")
    lb_image = os.environ.get("FWS_DOCKER_LB_IMAGE")
    redis_image = os.environ.get("FWS_DOCKER_REDIS_IMAGE")
    if not image or not lb_image or not redis_image:
        raise RuntimeError(
            "FWS_DOCKER_IMAGE, FWS_DOCKER_LB_IMAGE and FWS_DOCKER_REDIS_IMAGE must name built images: "
            "run make docker-test"
        )
    port, grpc_port = free_port(), free_port()
    project = f"fwstest{os.getpid()}"
    env = {
        **os.environ,
        "FWS_IMAGE": image,
        "LB_IMAGE": lb_image,
        "REDIS_IMAGE": redis_image,
        "LB_BIND": "127.0.0.1",
        "LB_PORT": str(port),
        "LB_GRPC_PORT": str(grpc_port),
        "MODEL_REPOSITORY_DIR": str(REPO / "model_repository"),
    }
    compose = [*compose_command(), "-f", str(COMPOSE_FILE), "-p", project]
    s = Stack(
        compose=compose, env=env, base_url=f"http://127.0.0.1:{port}", grpc_target=f"127.0.0.1:{grpc_port}"
    )
    try:
        run([*compose, "up", "-d", "--no-build"], env=env, timeout=180)
        yield s
    finally:
        print(s.logs())
        subprocess.run([*compose, "down", "--remove-orphans", "-t", "15"], env=env, timeout=120, check=False)


def test_compose_starts_two_replicas_that_become_healthy(stack: Stack) -> None:
    replicas = stack.containers("fws")
    assert len(replicas) == 2, replicas
    waited = stack.wait_healthy(replicas)
    print(f"both replicas healthy after {waited:.1f} s")
    # Health comes from the image's HEALTHCHECK command, i.e. the V2 readiness endpoint inside the container.
    for container in replicas:
        config = inspect(container)["Config"]
        assert config["Healthcheck"]["Test"][-1] == "/opt/fws/healthcheck.py"
        assert config["User"] == "fws:fws"
        assert run(["docker", "exec", container, "id", "-u"]).strip() != "0"


def test_the_model_repository_is_mounted_read_only(stack: Stack) -> None:
    container = stack.containers("fws")[0]
    mounts = {m["Destination"]: m for m in inspect(container)["Mounts"]}
    assert mounts["/models"]["RW"] is False
    probe = subprocess.run(
        ["docker", "exec", container, "touch", "/models/x"], capture_output=True, check=False
    )
    assert probe.returncode != 0


def test_requests_through_the_load_balancer_reach_both_replicas(stack: Stack) -> None:
    replicas = stack.containers("fws")
    stack.wait_healthy(replicas)
    addresses = {replica_address(c): c for c in replicas}
    responses = stack.retrieve_many(REQUESTS)
    assert [r.status_code for r in responses] == [200] * REQUESTS
    assert {r.json()["value"] for r in responses} == {"9"}
    served_by = Counter(stack.served_by(responses))
    print(f"served by: {dict(served_by)}")
    assert set(served_by) == set(addresses), (served_by, addresses)


def test_v2_protocol_and_typed_errors_pass_through_the_load_balancer(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=15) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/lb/health").status_code == 200
        infer = client.post(
            "/v2/models/fastweights_t11/infer",
            json={
                "inputs": [
                    {
                        "name": "tokens",
                        "shape": [1, 11],
                        "datatype": "INT64",
                        "data": metadata_tokens(client, "c9k8j3f1??c"),
                    }
                ]
            },
        )
        assert infer.status_code == 200, infer.text
        assert {o["name"] for o in infer.json()["outputs"]} >= {"logits"}
        bad = client.post("/v1/retrieve", json={"sequence": "c9c8??c"})
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "duplicate_key"
        # The caller's request id reaches the replica and comes back.
        echoed = client.post("/v1/retrieve", json=QUERY, headers={"X-Request-ID": "docker-test-1"})
        assert echoed.headers["x-request-id"] == "docker-test-1"


def test_grpc_through_the_load_balancer_is_balanced_per_call_over_both_replicas(stack: Stack) -> None:
    import grpc
    import numpy as np
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    replicas = stack.containers("fws")
    stack.wait_healthy(replicas)
    with httpx.Client(base_url=stack.base_url, timeout=15) as client:
        tokens = np.array([metadata_tokens(client, "c9k8j3f1??c")], dtype=np.int64)
    request = service_pb2.ModelInferRequest(model_name="fastweights_t11")
    request.inputs.add(name="tokens", datatype="INT64", shape=[1, 11])
    request.raw_input_contents.append(tokens.tobytes())
    rids = [f"docker-grpc-{uuid.uuid4().hex}" for _ in range(REQUESTS)]
    with grpc.insecure_channel(stack.grpc_target) as channel:  # ONE connection, as a gRPC client keeps
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=15)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for rid in rids:
            response, call = stub.ModelInfer.with_call(request, timeout=15, metadata=(("x-request-id", rid),))
            logits = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
            assert int(logits.argmax()) == 9
            assert "x-upstream-addr" not in dict(call.initial_metadata())  # no internal address sent out
    served_by = Counter(stack.upstreams(rids))
    print(f"gRPC served by: {dict(served_by)}")
    grpc_addresses = {replica_address(c).replace(":8000", ":8001") for c in replicas}
    assert set(served_by) == grpc_addresses, (served_by, grpc_addresses)


def test_the_playground_page_is_served_through_the_load_balancer(stack: Stack) -> None:
    """The page's files are package data: the image must hold them (pyproject's package-data)."""
    with httpx.Client(base_url=stack.base_url, timeout=15) as client:
        page = client.get("/")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert 'src="/playground/playground.js"' in page.text
        for asset in ("/playground/playground.js", "/playground/playground.css"):
            assert client.get(asset).status_code == 200, asset


def metadata_tokens(client: httpx.Client, sequence: str) -> list[int]:
    """Encode with the vocabulary the served model publishes in its V2 metadata (no local model code)."""
    metadata = client.get("/v2/models/fastweights_t11")
    assert metadata.status_code == 200, metadata.text
    params = metadata.json().get("parameters", {})
    vocab = params.get("vocab")
    if isinstance(vocab, str):
        vocab = json.loads(vocab)
    assert vocab, f"model metadata carries no vocab: {metadata.json()}"
    return [vocab.index(ch) for ch in sequence]


def test_a_stopped_replica_is_routed_around(stack: Stack) -> None:
    replicas = stack.containers("fws")
    stack.wait_healthy(replicas)
    victim, survivor = replicas
    survivor_address = replica_address(survivor)
    t0 = time.monotonic()
    run(["docker", "stop", "-t", "15", victim])
    stop_s = time.monotonic() - t0
    # Exec-form entrypoint + init: SIGTERM reaches the server, which drains and exits 0 well within the grace.
    assert inspect(victim)["State"]["ExitCode"] == 0
    assert stop_s < 10, f"docker stop took {stop_s:.1f} s: SIGTERM was not handled"
    responses = stack.retrieve_many(REQUESTS)
    assert [r.status_code for r in responses] == [200] * REQUESTS
    assert {tried.split(", ")[-1] for tried in stack.served_by(responses)} == {survivor_address}
    print(f"replica stopped in {stop_s:.1f} s; {REQUESTS}/{REQUESTS} requests answered by the survivor")
    run(["docker", "start", victim])
    stack.wait_healthy(replicas)


def test_a_crashed_replica_fails_over_and_is_restarted(stack: Stack) -> None:
    replicas = stack.containers("fws")
    stack.wait_healthy(replicas)
    victim = replicas[0]
    restarts = inspect(victim)["RestartCount"]
    stack.retrieve_many(4)  # nginx now holds kept-alive connections to both: the kill cuts one it reuses
    # SIGKILL every process of the service user except the init (PID 1 ignores it): the server dies hard.
    # (The shell's kill: the image has no procps.) The exec dies with the rest: its status means nothing.
    subprocess.run(["docker", "exec", victim, "sh", "-c", "kill -KILL -1"], capture_output=True, check=False)
    responses = stack.retrieve_many(REQUESTS)
    assert [r.status_code for r in responses] == [200] * REQUESTS
    tried = stack.served_by(responses)
    resent = sum(", " in t for t in tried)
    print(f"after the kill: {resent} of {REQUESTS} requests were sent on to a survivor")
    # restart: unless-stopped brings it back; it rejoins once healthy.
    deadline = time.monotonic() + 60
    while inspect(victim)["RestartCount"] == restarts:
        assert time.monotonic() < deadline, "the crashed replica was not restarted"
        time.sleep(0.5)
    stack.wait_healthy(replicas)
    # nginx takes a replica it saw fail back after fail_timeout (5 s), and a new address after its next DNS
    # poll (2 s): healthy in Docker's eyes can come first, so it must rejoin within those, not at once.
    everyone = {replica_address(c) for c in replicas}
    deadline = time.monotonic() + 5 + 2 + 5
    while True:
        served_by = Counter(t.split(", ")[-1] for t in stack.served_by(stack.retrieve_many(REQUESTS)))
        if set(served_by) == everyone or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(served_by) == everyone, served_by


def test_a_memory_session_is_served_by_every_replica_and_outlives_a_crashed_one(stack: Stack) -> None:
    """Sessions live in the compose Redis: appends through the balancer land on both replicas, a replica
    SIGKILLed mid-stream loses nothing (the balancer retries the cut request on the other replica; the
    append's sequence number makes that retry apply once), and the answers equal the stateless API's."""
    replicas = stack.containers("fws")
    stack.wait_healthy(replicas)
    pairs = [[k, str(i % 10)] for i, k in enumerate("qwertyuiopas")]
    with httpx.Client(base_url=stack.base_url, timeout=15) as c:
        r = c.post("/v1/sessions")
        assert r.status_code == 201, r.text
        sid = r.json()["session_id"]
        answered: list[httpx.Response] = []
        for seq, pair in enumerate(pairs):
            if seq == 6:  # mid-stream: kill one replica hard
                subprocess.run(
                    ["docker", "exec", replicas[0], "sh", "-c", "kill -KILL -1"],
                    capture_output=True,
                    check=False,
                )
            for _ in range(
                20
            ):  # what a client does on a 502/503 while the pool changes: retry the same append
                rid = f"docker-test-{uuid.uuid4().hex}"
                body = {"pairs": [pair], "seq": seq}
                r = c.post(f"/v1/sessions/{sid}/pairs", json=body, headers={"X-Request-ID": rid})
                if r.status_code not in (502, 503, 504):
                    break
                time.sleep(0.5)
            assert r.status_code == 200, r.text
            answered.append(r)
        info = c.get(f"/v1/sessions/{sid}").json()
        assert info["pairs"] == pairs and info["next_seq"] == len(pairs)
        for key, _ in pairs:
            got = c.post(f"/v1/sessions/{sid}/query", json={"query": key}).json()
            want = c.post("/v1/retrieve", json={"pairs": pairs, "query": key}).json()
            assert got["value"] == want["value"] and abs(got["confidence"] - want["confidence"]) <= 1e-4
    served_by = Counter(addr.split(", ")[-1] for addr in stack.served_by(answered))
    assert len(served_by) == 2, served_by  # both replicas served this one session
    stack.wait_healthy(replicas)


def read_answer(raw: socket.socket) -> tuple[bytes, Any]:
    """One HTTP answer with a JSON body from a connected socket: (status line, JSON body)."""
    answer = b""
    try:
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _content_length(answer):
            chunk = raw.recv(4096)
            if not chunk:
                break
            answer += chunk
    except TimeoutError:
        raise AssertionError(f"no whole answer in time; got {answer!r}") from None
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer
    return head.split(b"\r\n")[0], json.loads(body)


def _content_length(answer: bytes) -> int:
    """The Content-Length of an answer's head (nginx and the service send one with every JSON body)."""
    found = re.search(rb"\r\ncontent-length: *(\d+)", answer.partition(b"\r\n\r\n")[0].lower())
    assert found, answer
    return int(found.group(1))


def lb_connection(stack: Stack) -> socket.socket:
    """A fresh TCP connection to the load balancer's HTTP port."""
    host, port = stack.base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def raw_request(stack: Stack, request: bytes) -> tuple[bytes, Any]:
    """Bytes sent as they are on a fresh connection to the load balancer: (status line, JSON body)."""
    with lb_connection(stack) as raw:
        raw.sendall(request)
        return read_answer(raw)


def test_the_load_balancers_own_errors_are_the_services_json(stack: Stack) -> None:
    """What nginx answers itself (a request it refuses; no replica left) is JSON, never an HTML page."""
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        refused = [
            (
                client.get("/v2/health/ready", headers={"X-Big": "a" * 9000}),
                431,
                "request head (headers) too large",
            ),
            (client.get("/" + "a" * 9000), 414, "request line (URI) too long"),
            (client.request("TRACE", "/v1/retrieve"), 405, "method not allowed"),
            (client.get("/_lb/400"), 404, "not found"),  # nginx's own error pages are not a route
        ]
    for r, status, message in refused:
        assert r.status_code == status and r.headers["content-type"] == "application/json", r.text
        assert r.json() == {"error": message}
    # an unreadable request, also on a route that fails over (its own error pages are the server's)
    for path in (b"/v1/sessions", b"/v1/retrieve"):
        status, body = raw_request(
            stack, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n"
        )
        assert status.startswith(b"HTTP/1.1 400 ") and "could not parse" in body["error"], (path, body)
    status, body = raw_request(stack, b"NOT HTTP \x01\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400 ") and "could not parse" in body["error"]
    # a body over the load balancer's 16 MiB, in the path's shape (sent without its body: nginx answers first)
    big = b"Host: x\r\nContent-Type: application/json\r\nContent-Length: 17000000\r\n\r\n"
    status, body = raw_request(stack, b"POST /v1/retrieve HTTP/1.1\r\n" + big)
    assert status.startswith(b"HTTP/1.1 413 ") and body["error"]["code"] == "body_too_large", body
    status, body = raw_request(stack, b"POST /v2/models/fastweights_t11/infer HTTP/1.1\r\n" + big)
    assert status.startswith(b"HTTP/1.1 413 ") and "too large" in body["error"], body
    replicas = stack.containers("fws")
    stack.wait_healthy(replicas)
    run([*stack.compose, "stop", "-t", "15", "fws"], env=stack.env)
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            native = [client.post("/v1/retrieve", json=QUERY), client.post("/v1/sessions", json={})]
            v2 = client.post("/v2/models/fastweights_t11/infer", json={"inputs": []})
        # 502 when the stopped replicas' addresses refuse or are unreachable, 504 when connecting to them
        # times out: either way the path's JSON shape, the code that says which, and Retry-After
        code = {502: "upstream_failed", 504: "deadline_exceeded"}
        for r in [*native, v2]:
            assert r.status_code in code and r.headers["retry-after"] == "1", r.text
            assert r.headers["content-type"] == "application/json"
        for r in native:
            assert r.json()["error"]["code"] == code[r.status_code] and r.json()["error"]["field"] is None
        assert "no replica answered" in v2.json()["error"], v2.text
    finally:
        run([*stack.compose, "start", "fws"], env=stack.env)
    stack.wait_healthy(replicas)


def test_a_client_over_the_load_balancers_in_progress_limit_gets_a_quick_json_503(stack: Stack) -> None:
    """nginx's per-address limit on requests in progress (limit_conn), for real. Of requests held open (heads
    sent, bodies not), a few more than the limit, exactly the excess get the JSON 503 at once; so does the
    next request on either API, with Retry-After; once the held ones are gone, the address is served again."""
    stack.wait_healthy(stack.containers("fws"))
    conf = (REPO / "deploy" / "nginx" / "nginx.conf").read_text()
    limit = int(re.search(r"^\s*limit_conn per_client (\d+);", conf, re.MULTILINE).group(1))
    excess = 4
    body = json.dumps(QUERY).encode()
    head = b"POST /v1/retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"Content-Length: %d\r\n\r\n" % len(body)
    held: list[socket.socket] = []
    try:
        with selectors.DefaultSelector() as answered:
            for _ in range(limit + excess):  # each one in progress: nginx waits for the rest of its body
                raw = lb_connection(stack)
                held.append(raw)
                raw.sendall(head + body[:1])
                answered.register(raw, selectors.EVENT_READ)
            refused: list[tuple[bytes, Any]] = []
            deadline = time.monotonic() + 15
            while len(refused) < excess and time.monotonic() < deadline:
                for key, _ in answered.select(timeout=0.5):
                    answered.unregister(key.fileobj)
                    refused.append(read_answer(key.fileobj))
            time.sleep(0.5)  # (time for a wrongly refused one more to show)
            refused += [read_answer(key.fileobj) for key, _ in answered.select(timeout=0)]
        assert len(refused) == excess, refused  # the limit exactly: every head has reached nginx by now
        for status, answer in refused:
            assert status.startswith(b"HTTP/1.1 503 "), (status, answer)
            assert answer["error"]["code"] == "too_many_requests_in_progress", answer
            assert f"at most {limit} through the load balancer" in answer["error"]["message"]
        with httpx.Client(base_url=stack.base_url, timeout=10) as client:
            started = time.monotonic()
            native = client.post("/v1/retrieve", json=QUERY)
            v2 = client.get("/v2/health/ready")
            assert time.monotonic() - started < 2  # refused at once, not queued behind the held ones
        for r in (native, v2):
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            assert r.headers["content-type"] == "application/json"
        assert native.json()["error"]["code"] == "too_many_requests_in_progress", native.text
        assert "too many requests in progress" in v2.json()["error"], v2.text
    finally:
        for raw in held:
            raw.close()
    deadline = time.monotonic() + 10
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        while (r := client.post("/v1/retrieve", json=QUERY)).status_code == 503:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)  # (nginx counts a held request out once it sees its connection close)
    assert r.status_code == 200 and r.json()["value"] == "9", r.text


def test_compose_down_removes_everything_quickly(stack: Stack) -> None:
    t0 = time.monotonic()
    run([*stack.compose, "down", "--remove-orphans", "-t", "15"], env=stack.env)
    down_s = time.monotonic() - t0
    print(f"compose down in {down_s:.1f} s")
    assert stack.containers("fws") == []
    assert stack.containers("lb") == []
    assert down_s < 30
