"""Static checks of the Docker deployment files (no daemon needed), and the two helper scripts the image runs:
deploy/serve_requirements.py (at build time) and deploy/healthcheck.py (the HEALTHCHECK, against a real HTTP
server on 127.0.0.1). The end-to-end behaviour is in test_docker_compose.py (make docker-test)."""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import healthcheck
from deploy.serve_requirements import serve_requirements, split_requirement
from service import errors
from service.config import Settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
NGINX = (REPO / "deploy" / "nginx" / "nginx.conf").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETTINGS = {f"FWS_{name.upper()}" for name in Settings.model_fields}


def instructions(keyword: str) -> list[str]:
    """Arguments of every `KEYWORD ...` instruction of the Dockerfile (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{keyword}\s+(.*)$", joined, re.M)]


# Dockerfile


def test_dockerfile_defaults_to_a_public_python_base_and_offers_cpu_or_gpu_onnxruntime() -> None:
    assert instructions("ARG")[0] == "BASE_IMAGE=python:3.11-slim"
    assert "ONNXRUNTIME=cpu" in instructions("ARG")
    stages = instructions("FROM")
    assert stages == ["${BASE_IMAGE} AS build", "${BASE_IMAGE} AS runtime"]


def test_runtime_stage_runs_as_non_root_with_an_exec_form_entrypoint_and_v2_healthcheck() -> None:
    (user,) = instructions("USER")
    assert user.split(":")[0] not in ("root", "0")
    (entrypoint,) = instructions("ENTRYPOINT")
    assert json.loads(entrypoint) == ["/opt/fws/bin/python", "-m", "service"]  # exec form: JSON array
    (check,) = instructions("HEALTHCHECK")
    command = json.loads(check.split("CMD", 1)[1])
    assert command == ["/opt/fws/bin/python", "/opt/fws/healthcheck.py"]
    assert healthcheck.READY_PATH == "/v2/health/ready"


def test_runtime_image_is_configured_through_real_service_settings() -> None:
    env = " ".join(instructions("ENV"))
    names = set(re.findall(r"\b(FWS_[A-Z_]+)=", env))
    assert names >= {"FWS_HOST", "FWS_PORT", "FWS_GRPC_PORT", "FWS_MODEL_REPOSITORY"}
    assert names <= SETTINGS, names - SETTINGS
    assert "FWS_MODEL_REPOSITORY=/models" in env
    (exposed,) = instructions("EXPOSE")
    assert set(exposed.split()) == {"8000", "8001"}  # HTTP and gRPC
    assert "FWS_PORT=8000" in env and "FWS_GRPC_PORT=8001" in env
    assert "COPY model_repository /models" in DOCKERFILE


def test_runtime_stage_gets_no_torch_and_no_build_tools() -> None:
    runtime = DOCKERFILE.split("AS runtime", 1)[1]
    assert "pip install" not in runtime
    assert not re.search(r"apt-get|gcc|build-essential", DOCKERFILE)
    # The build itself fails if torch ever sneaks into the venv.
    assert '! /opt/fws/bin/python -c "import torch"' in DOCKERFILE
    assert "pip uninstall -q -y pip setuptools" in DOCKERFILE


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources = set()
    for copy in instructions("COPY"):
        if copy.startswith("--from"):
            continue
        sources |= set(copy.split()[:-1])
    sources = {s.rstrip("/") for s in sources}
    assert sources <= allowed, sources - allowed
    for path in allowed:
        assert (REPO / path).exists(), path


# serve_requirements.py


def test_cpu_image_swaps_onnxruntime_gpu_for_the_cpu_wheel_with_the_same_bound() -> None:
    cpu = serve_requirements(PYPROJECT, "cpu")
    gpu = serve_requirements(PYPROJECT, "gpu")
    (cpu_ort,) = [r for r in cpu if split_requirement(r)[0].startswith("onnxruntime")]
    (gpu_ort,) = [r for r in gpu if split_requirement(r)[0].startswith("onnxruntime")]
    assert split_requirement(cpu_ort)[:2] == ("onnxruntime", "")
    assert split_requirement(gpu_ort)[:2] == ("onnxruntime-gpu", "[cuda,cudnn]")
    assert split_requirement(cpu_ort)[2] == split_requirement(gpu_ort)[2]
    others = [r for r in cpu if r != cpu_ort]
    assert others == [r for r in gpu if r != gpu_ort]
    assert all(split_requirement(r)[0] != "torch" for r in cpu + gpu)


def test_serve_requirements_rejects_an_unknown_flavour_and_a_serve_extra_without_onnxruntime() -> None:
    with pytest.raises(ValueError, match="cpu"):
        serve_requirements(PYPROJECT, "rocm")
    broken = {"project": {"dependencies": [], "optional-dependencies": {"serve": ["fastapi>=0.115"]}}}
    with pytest.raises(ValueError, match="onnxruntime"):
        serve_requirements(broken, "cpu")


def test_serve_requirements_cli_prints_one_requirement_per_line() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "serve_requirements.py"), "--onnxruntime", "cpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines() == serve_requirements(PYPROJECT, "cpu")


# healthcheck.py


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8000/v2/health/ready"),
        ("::", "http://127.0.0.1:8000/v2/health/ready"),
        ("10.1.2.3", "http://10.1.2.3:8000/v2/health/ready"),
        ("fd00::1", "http://[fd00::1]:8000/v2/health/ready"),
    ],
)
def test_healthcheck_probes_the_address_the_service_binds(host: str, url: str) -> None:
    assert healthcheck.ready_url({"FWS_HOST": host, "FWS_PORT": "8000"}) == url


@pytest.fixture
def fake_service() -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"status": 200, "paths": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["paths"].append(self.path)
            self.send_response(state["status"])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["port"] = server.server_address[1]
    yield state
    server.shutdown()
    server.server_close()


def run_healthcheck(port: int) -> int:
    env = {"FWS_HOST": "0.0.0.0", "FWS_PORT": str(port), "PATH": "/usr/bin:/bin"}
    script = REPO / "deploy" / "healthcheck.py"
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=20).returncode


def test_healthcheck_passes_only_while_the_service_is_ready(fake_service: dict[str, Any]) -> None:
    assert run_healthcheck(fake_service["port"]) == 0
    fake_service["status"] = 503  # loading, warming up or draining
    assert run_healthcheck(fake_service["port"]) == 1
    assert fake_service["paths"] == ["/v2/health/ready"] * 2


def test_healthcheck_fails_when_nothing_listens(fake_service: dict[str, Any]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    assert run_healthcheck(closed_port) == 1


# docker-compose.yml and the load balancer


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service["environment"].items()}


def test_compose_runs_replicas_with_healthcheck_restart_and_a_read_only_model_mount() -> None:
    fws = COMPOSE["services"]["fws"]
    assert fws["deploy"]["replicas"] >= 2
    assert fws["restart"] == "unless-stopped"
    assert fws["init"] is True
    assert fws["healthcheck"]["test"] == ["CMD", "/opt/fws/bin/python", "/opt/fws/healthcheck.py"]
    (mount,) = fws["volumes"]
    assert mount["target"] == compose_env(fws)["FWS_MODEL_REPOSITORY"] == "/models"
    assert mount["read_only"] is True
    assert mount["source"].startswith("${MODEL_REPOSITORY_DIR:-")  # overridable
    assert fws["read_only"] is True and "/tmp" in fws["tmpfs"]
    # Compose's grace period outlasts the service's own drain.
    grace = int(fws["stop_grace_period"].rstrip("s"))
    assert grace > float(compose_env(fws)["FWS_DRAIN_TIMEOUT_S"])


def test_compose_environment_names_only_real_service_settings() -> None:
    for name in ("fws", "fws-gpu"):
        env = compose_env(COMPOSE["services"][name])
        assert set(env) <= SETTINGS, set(env) - SETTINGS
        assert env["FWS_HOST"] == "0.0.0.0"


def test_gpu_profile_reserves_an_nvidia_device_and_joins_the_balanced_pool() -> None:
    gpu = COMPOSE["services"]["fws-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["build"]["args"]["ONNXRUNTIME"] == "gpu"
    assert compose_env(gpu)["FWS_DEVICE"] == "cuda"
    assert "fws" in gpu["networks"]["default"]["aliases"]
    assert "profiles" not in COMPOSE["services"]["fws"] and "profiles" not in COMPOSE["services"]["lb"]


def test_load_balancer_fronts_the_fws_service_on_one_port() -> None:
    lb = COMPOSE["services"]["lb"]
    http, grpc = lb["ports"]
    assert http == "${LB_BIND:-127.0.0.1}:${LB_PORT:-8080}:8080"
    assert grpc == "${LB_BIND:-127.0.0.1}:${LB_GRPC_PORT:-8081}:8081"
    assert re.search(r"^\s*listen 8080;", NGINX, re.M)
    assert re.search(r"^\s*listen 8081 http2;", NGINX, re.M)
    conf, run_sh = lb["volumes"]
    assert (REPO / conf["source"]).resolve() == (REPO / "deploy/nginx/nginx.conf").resolve()
    assert conf["target"] == "/etc/nginx/nginx.conf" and conf["read_only"] is True
    assert (REPO / run_sh["source"]).resolve() == (REPO / "deploy/nginx/run.sh").resolve()
    assert lb["command"] == ["sh", run_sh["target"]]
    # nginx balances over whatever answers to the compose service name, on the service's port, through an
    # upstream block that keeps connections to the replicas alive.
    (upstream,) = re.findall(r"upstream fws_replicas \{(.*?)\}", NGINX, re.S)
    (server,) = re.findall(r"^\s*server (\S+)", upstream, re.M)
    assert server == "fws:8000" and "fws" in COMPOSE["services"]
    assert re.search(r"^\s*keepalive \d+;", upstream, re.M)
    assert "proxy_pass http://fws_replicas;" in NGINX
    assert 'proxy_set_header Connection "";' in NGINX and "proxy_http_version 1.1;" in NGINX
    assert compose_env(COMPOSE["services"]["fws"])["FWS_PORT"] == "8000"
    # gRPC: balanced per call over the same replicas' gRPC port, kept alive too
    (grpc_upstream,) = re.findall(r"upstream fws_grpc_replicas \{(.*?)\}", NGINX, re.S)
    assert re.findall(r"^\s*server (\S+)", grpc_upstream, re.M) == ["fws:8001"]
    assert "grpc_pass grpc://fws_grpc_replicas;" in NGINX
    assert compose_env(COMPOSE["services"]["fws"])["FWS_GRPC_PORT"] == "8001"
    assert {"8000", "8001"} <= {str(p) for p in COMPOSE["services"]["fws"]["expose"]}


def test_load_balancer_follows_the_replicas_behind_the_name() -> None:
    script = (REPO / "deploy/nginx/run.sh").read_text()
    assert "getent ahostsv4 fws" in script and "nginx -s reload" in script
    assert "resolver 127.0.0.11" in NGINX  # Docker's DNS
    done = subprocess.run(["sh", "-n", str(REPO / "deploy/nginx/run.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


_BLOCK = r"^([ \t]*){kind} ([^{{\n]+?) \{{\n(.*?)\n\1\}}$"


def _blocks(kind: str, text: str) -> list[tuple[str, str]]:
    """(name, body) of each `kind name { ... }` block of nginx.conf: its closing brace alone on a line, as
    indented as its first line (JSON bodies and nested `if` blocks inside have braces of their own)."""
    return [(name, body) for _, name, body in re.findall(_BLOCK.format(kind=kind), text, re.M | re.S)]


def _server_level(http_port: str) -> str:
    """The HTTP server's own directives: its text without the location blocks."""
    return re.sub(_BLOCK.format(kind="location"), "", http_port, flags=re.M | re.S)


def test_load_balancer_fails_over_but_never_resends_a_post_a_replica_received() -> None:
    (next_upstream,) = re.findall(r"^\s*proxy_next_upstream (.*);", NGINX, re.M)
    assert {"error", "timeout", "http_503"} <= set(next_upstream.split())
    # Without non_idempotent, a POST is retried only if it never reached a replica (connection refused):
    # a replica's 503 (overloaded) goes back to the client instead of to the next replica.
    assert "non_idempotent" not in next_upstream.split()
    # ... except, on routes where a second delivery changes nothing, one that got no answer at all (its
    # replica died under it: nginx's own 502, never a replica's, which proxy_intercept_errors would make one).
    assert not re.search(r"^\s*proxy_intercept_errors on", NGINX, re.M)
    http_port = NGINX.split("listen 8081")[0]  # the HTTP server (the gRPC one follows it)
    locations = dict(_blocks("location", http_port))
    # nginx's own 502 goes to @failover from every location (none sets an error_page of its own) ...
    assert re.search(r"^\s*error_page 502 = @failover;", _server_level(http_port), re.M)
    assert [where for where, body in locations.items() if "error_page" in body] == ["@failover"]
    # ... which sends it to the pool once more only where the map allows it, else answers the JSON 502, and
    # sends a second failure there too: once, not a loop
    failover = locations["@failover"]
    assert re.search(r"error_page 502 = @lb_no_replica;", failover)
    assert failover.index("if ($fws_resend_safe = 0)") < failover.index("proxy_pass http://fws_replicas;")
    assert re.search(r"if \(\$fws_resend_safe = 0\) \{\s*return 502;\s*\}", failover)
    ((_, safe),) = [(name, body) for name, body in _blocks("map", NGINX) if name == "$uri $fws_resend_safe"]
    assert re.search(r"^\s*default 0;", safe, re.M)
    resent = re.findall(r"^\s*~(\S+) 1;", safe, re.M)

    def fails_over(path: str) -> bool:  # nginx's map: the first regex that matches, else the default
        return any(re.search(regex, path) for regex in resent)

    for path in (
        "/v1/retrieve",
        "/v1/retrieve/batch",
        "/v1/sessions/AbC-12_x/pairs",
        "/v1/sessions/AbC-12_x/query",
        "/v2/models/fastweights_t11/infer",
        "/v2/models/fastweights_t55/versions/3/infer",
        "/v2/repository/index",
    ):
        assert fails_over(path), path
    for path in (
        "/v1/sessions",  # a second session
        "/v1/sessions/AbC-12_x",  # DELETE (nginx itself retries it: idempotent)
        "/v2/models/fastweights_stream/infer",  # a V2 sequence step has no sequence number
        "/v2/models/fastweights_stream/versions/2/infer",
        "/v2/repository/models/fastweights_t11/load",
        "/v2/repository/models/fastweights_t11/unload",
    ):
        assert not fails_over(path), path
    assert "proxy_pass http://fws_replicas;" in locations["/"]
    (grpc_next,) = re.findall(r"^\s*grpc_next_upstream (.*);", NGINX, re.M)
    assert set(grpc_next.split()) == {"error", "timeout"}  # gRPC calls are POSTs too


def test_load_balancer_sends_no_internal_address_to_clients() -> None:
    # (which replica answered is in the access log, with the request id); the only header it adds is the
    # Retry-After of its own 502/503/504
    assert set(re.findall(r"^\s*add_header (.*);", NGINX, re.M)) == {"Retry-After 1 always"}
    assert "server_tokens off;" in NGINX


ERROR_PAGE = r"^\s*error_page (\d+) =? ?(\S+);"


def _json_answers(locations: dict[str, str]) -> dict[str, tuple[int, str, dict[str, str]]]:
    """Each error-page target among `locations`: (status returned, body as written in nginx.conf, the
    variables the location sets for it)."""
    out = {}
    for where, body in locations.items():
        answer = re.search(r"^\s*return (\d+) (\S.*);", body, re.M)
        if answer and "default_type application/json;" in body:
            # each whole value (quoted: up to its closing quote, `;` included), set before the answer
            sets = re.findall(r'^\s*set \$(\w+) (?:"((?:[^"\\]|\\.)*)"|([^\s;"]+));$', body, re.M)
            assert len(sets) == body.count("set $"), where
            assert all(body.index(f"set ${name} ") < answer.start() for name, _, _ in sets), where
            # (nginx reads \" in a quoted value as ": so must the JSON it goes into)
            variables = {name: re.sub(r"\\(.)", r"\1", quoted) or bare for name, quoted, bare in sets}
            out[where.removeprefix("= ")] = (int(answer.group(1)), answer.group(2), variables)
    return out


def test_load_balancer_answers_its_own_errors_in_the_services_json_never_html() -> None:
    http_port = NGINX.split("listen 8081")[0]
    locations = dict(_blocks("location", http_port))
    server_level = _server_level(http_port)
    answers = _json_answers(locations)
    maps = {name.split()[-1][1:]: body for name, body in _blocks("map", NGINX) if "$fws_lb_v2 " in name}

    def bodies(written: str, variables: dict[str, str]) -> list[Any]:
        """A literal, or a map's value for V2 paths and for the others with the location's variables in it."""

        def filled(value: str) -> Any:
            # (a KeyError: a variable the location leaves unset)
            text = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], value)
            return json.loads(text)

        if written.startswith("$"):
            values = dict(re.findall(r"^\s*(\S+) '(.*)';", maps[written[1:]], re.M))
            assert set(values) == {"1", "default"}
            return [filled(values["1"]), filled(values["default"])]
        return [filled(written.strip("'"))]

    messages = set()
    for where, (status, written, variables) in answers.items():
        for body in bodies(written, variables):
            assert set(body) == {"error"}, (where, body)
        if written.startswith("$"):  # V2 paths: {"error": "message"}, the others the native shape, one text
            v2, native = bodies(written, variables)
            assert isinstance(v2["error"], str) and set(native["error"]) == {"code", "message", "field"}
            assert v2["error"] == native["error"]["message"] and native["error"]["field"] is None, where
            assert re.fullmatch(r"[a-z_]+", native["error"]["code"]), where
            if status in (413, 504):  # where the service answers the same status, nginx uses its code
                assert native["error"]["code"] == errors._STATUS_CODES[status], where
            messages.add(v2["error"])
    assert len(messages) == 4, messages  # no replica, none in time, too busy, body too large: one each
    # the V2 shape is chosen by the same rule as service/errors.py's is_v2
    (rule,) = re.findall(r"map \$uri \$fws_lb_v2 \{\s*(\S+) 1;", NGINX)
    for path in ("/v2", "/v2/models/x/infer", "/v1/retrieve", "/v2x", "/"):
        assert bool(re.search(rule.removeprefix("~"), path)) == errors.is_v2(path), path
    # every status nginx makes itself goes to one of them, from the server level, which every location
    # inherits (none but @failover sets an error_page of its own; @failover ends in @lb_no_replica)
    own = {400: 400, 404: 404, 405: 405, 413: 413, 414: 414, 494: 431, 501: 501, 503: 503, 504: 504, 505: 505}
    pages = {int(code): target for code, target in re.findall(ERROR_PAGE, server_level, re.M)}
    assert set(pages) == {*own, 502} and pages[502] == "@failover"
    for code, target in pages.items():
        if code != 502:
            assert answers[target][0] == own[code], (code, target)
    failover = dict(re.findall(ERROR_PAGE, locations["@failover"], re.M))
    assert answers[failover["502"]][0] == 502 and failover["504"] == pages[504]
    assert re.search(r"^\s*recursive_error_pages on;", server_level, re.M)
    # (Retry-After on the ones that say "retry": no replica, none in time, too many requests in progress)
    for where, body in locations.items():
        if where.removeprefix("= ") in answers:
            retry = re.search(r"^\s*add_header Retry-After 1 always;", body, re.M) is not None
            assert retry == (answers[where.removeprefix("= ")][0] in (502, 503, 504)), where
    # the ones for a request line nginx may not have read are URIs (it has none to keep), reachable only
    # internally, and not a path the service has
    for code in (400, 404, 405, 414, 501, 505):
        assert pages[code].startswith("/_lb/")
        assert "internal;" in locations[f"= {pages[code]}"]


def test_load_balancer_applies_the_service_edge_limits() -> None:
    settings = Settings()

    def seconds(directive: str) -> float:  # the longest, where several contexts set it
        return max(float(v) for v in re.findall(rf"^\s*{directive} (\d+)s;", NGINX, re.M))

    assert seconds("client_header_timeout") == settings.header_timeout_s
    assert seconds("client_body_timeout") == settings.body_timeout_s
    assert seconds("send_timeout") == settings.send_timeout_s
    assert seconds("keepalive_timeout") <= 15
    (count, size) = re.findall(r"^\s*large_client_header_buffers (\d+) (\d+)k;", NGINX, re.M)[0]
    assert int(count) * int(size) * 1024 == settings.max_header_bytes
    assert "reset_timedout_connection on;" in NGINX


# scripts/docker-test.sh: where the test-only base images come from


def _mirror(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "APT_SOURCES_LIST": str(tmp_path / "sources.list")}
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "docker-test.sh"), "mirror"],
        env=base | {"APT_SOURCES_DIR": str(tmp_path)} | env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_docker_test_takes_the_debian_mirror_from_apts_sources(tmp_path: Path) -> None:
    (tmp_path / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.test/debian\nSuites: bookworm\nComponents: main\n"
    )
    done = _mirror(tmp_path, {})
    assert done.returncode == 0 and done.stdout.strip() == "http://mirror.test/debian", done.stderr
    (tmp_path / "debian.sources").unlink()  # the one-line format, with options in brackets
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64 signed-by=/k.gpg] http://one.test/debian bookworm main\n"
    )
    assert _mirror(tmp_path, {}).stdout.strip() == "http://one.test/debian"


def test_docker_test_prefers_debian_mirror_and_fails_clearly_without_any_mirror(tmp_path: Path) -> None:
    assert _mirror(tmp_path, {"DEBIAN_MIRROR": "http://chosen.test/debian"}).stdout.strip() == (
        "http://chosen.test/debian"
    )
    done = _mirror(tmp_path, {})  # no sources at all, no DEBIAN_MIRROR: no built-in address either
    assert done.returncode != 0 and done.stdout == ""
    assert "no Debian mirror" in done.stderr and "DEBIAN_MIRROR" in done.stderr
    assert "deb.debian.org" not in (REPO / "scripts" / "docker-test.sh").read_text()


def test_compose_keeps_memory_sessions_in_a_redis_service_every_replica_shares() -> None:
    redis = COMPOSE["services"]["redis"]
    assert redis["image"].startswith("${REDIS_IMAGE:-redis:")
    assert redis["command"][:1] == ["redis-server"] and "6379" in [str(p) for p in redis["expose"]]
    for name in ("fws", "fws-gpu"):
        assert compose_env(COMPOSE["services"][name])["FWS_SESSION_STORE"] == "redis://redis:6379/0"
