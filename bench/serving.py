"""Serving benchmarks, side by side in one run: overhead, dynamic batching, workers, peers (issue 7, 2/3/5/6).

    .venv/bin/python -m bench.serving                              # everything wrk-able, 5 s per cell
    .venv/bin/python -m bench.serving --parts overhead --duration 2 --clients 1,64
    .venv/bin/python -m bench.serving --parts peers                # needs `make bench-peers` first
    .venv/bin/python -m bench.serving --parts overhead --skip-references --baseline-tree A --baseline-tree B

Every server runs as its own process on a free 127.0.0.1 port; the load comes from wrk (Debian's package,
installed with apt-get when missing and allowed) or, failing that, bench.loadgen (asyncio httpx). Cells are
interleaved (each server once per concurrency level) and the ratios compare cells of the same run.

parts
  overhead  /v1/retrieve of the service vs (a) floor: bare FastAPI endpoint, same body, constant answer and
            (b) naive: FastAPI + onnxruntime, one request one run (bench/serving_apps.py), at --clients
  batching  the service with dynamic batching on (max batch 256) vs off (max batch 1) at 64 and 256 clients,
            and the batch-size distribution it produced (fws_batch_size_rows from /metrics)
  workers   `python -m service --workers 1` vs `--workers 2` at 64 clients
  peers     BentoML (adaptive batching) and Ray Serve (@serve.batch) serving the same ONNX graphs
            (bench/peers/), from the separate venv `make bench-peers` builds, at 64 clients
  v2peers   MLServer (adaptive batching), KServe's model server and LitServe (dynamic batching) on the same
            ONNX graph over V2 JSON, one row per request, one worker each, at 1 and 64 clients; each peer
            from its own venv (`make bench-peers`)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"

# Valid queries of 1..4 pairs (T 5..11), cycled by the load generator: every server answers the same mix.
SEQUENCES = ("c9k8j3f1??c", "a1??a", "x5y6??y", "p1q2r3??q", "m0n7b2v4??v", "d3e4??d", "z8w1g6??g", "h2??h")


def native_body(seq: str) -> str:
    return json.dumps({"sequence": seq})


def v2_body(seq: str) -> str:
    """One row of V2 JSON for fastweights_t11: the query's token ids, left padded to T=11."""
    from contract.vocab import Vocabulary

    tokens = Vocabulary().encode(seq, V2_SEQ_LEN)
    return json.dumps(
        {"inputs": [{"name": "tokens", "datatype": "INT64", "shape": [1, V2_SEQ_LEN], "data": tokens}]}
    )


V2_MODEL, V2_SEQ_LEN = "fastweights_t11", 11


def list_body(seq: str) -> str:  # BentoML's batchable API takes a batch per call: send a batch of one
    return json.dumps({"sequences": [seq]})


@dataclass
class Target:
    name: str
    url: str  # full URL of the endpoint under load
    body: Callable[[str], str] = native_body
    metrics_url: str | None = None
    pid: int | None = None  # the server process, once started: its CPU per request is measured too


@dataclass
class Cell:
    requests: int
    duration_s: float
    p50_us: float
    p99_us: float
    errors: int
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


# ------------------------------------------------------------------------------------------ load generator

_WRK_SCRIPT = """
local bodies = {%s}
local i = 0
local headers = {["Content-Type"] = "application/json"}
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", nil, headers, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"errors": %%d}\\n', summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def find_wrk(install: bool) -> str | None:
    path = shutil.which("wrk")
    if path is None and install and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk from Debian's packages (apt-get install -y wrk)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, timeout=300)
        path = shutil.which("wrk")
    return path


def load(target: Target, clients: int, duration: float, wrk: str | None) -> Cell:
    """Drive `target` with `clients` keep-alive connections for `duration` seconds from another process."""
    bodies = [target.body(s) for s in SEQUENCES]
    timeout = duration + 60
    if wrk:
        lua = _WRK_SCRIPT % ", ".join("[[" + b + "]]" for b in bodies)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(lua)
        try:
            # One wrk thread: its CPU is taken from the same 2 cores the server runs on.
            cmd = [
                wrk,
                "-t1",
                f"-c{clients}",
                f"-d{max(1, round(duration))}s",
                "--timeout",
                "10s",
                "-s",
                f.name,
                target.url,
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
        finally:
            os.unlink(f.name)
        match = re.search(r"WRKJSON (\{.*\})", out)
        if not match:
            raise RuntimeError(f"wrk gave no result for {target.name}:\n{out}")
        r = json.loads(match.group(1))
        return Cell(r["requests"], r["duration_us"] / 1e6, r["p50_us"], r["p99_us"], r["errors"])
    cmd = [sys.executable, "-m", "bench.loadgen", target.url, "--clients", str(clients)]
    cmd += ["--duration", str(duration)] + [a for b in bodies for a in ("--body", b)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return Cell(r["requests"], r["duration_s"], r["p50_us"], r["p99_us"], r["errors"])


# ---------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def process(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    health_url: str,
    ready_timeout: float = 120.0,
    root: Path = ROOT,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server subprocess (own process group), ready when `health_url` answers 200; SIGTERM on exit."""
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FWS_")} | env
    full_env["PYTHONPATH"] = str(root)
    proc = subprocess.Popen(
        cmd, cwd=root, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited ({proc.returncode}):\n{Path(log.name).read_text()[-3000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} not ready after {ready_timeout}s:\n{Path(log.name).read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()
        os.unlink(log.name)


SERVICE_ENV = {  # one inference thread, one ORT intra-op thread: 2 cores shared with the load generator
    "FWS_INFERENCE_THREADS": "1",
    "FWS_ORT_INTRA_OP_THREADS": "1",
    "FWS_LOG_LEVEL": "warning",
    "FWS_REQUEST_TIMEOUT_S": "30",
}


def service(name: str, env: dict[str, str] | None = None, workers: int | None = None, root: Path = ROOT):
    port = free_port()
    # gRPC on a free port too (its default 8001 may be taken by another server on this machine)
    full = SERVICE_ENV | {"FWS_HOST": "127.0.0.1", "FWS_PORT": str(port), "FWS_GRPC_PORT": str(free_port())}
    full |= env or {}
    cmd = [sys.executable, "-m", "service"]
    if workers is not None:  # uvicorn's supervisor; each worker builds the app (and its sessions) itself
        cmd += ["--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    target = Target(name, url + "/v1/retrieve", metrics_url=url + "/metrics")
    return target, process(name, cmd, full, url + "/v2/health/ready", root=root)


def uvicorn_command(app: str, port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        *("--no-access-log", "--log-level", "warning"),
    ]


def uvicorn_app(name: str, app: str, workers: int = 1):
    port = free_port()
    cmd = uvicorn_command(app, port, workers)
    url = f"http://127.0.0.1:{port}"
    return Target(name, url + "/v1/retrieve"), process(name, cmd, {}, url + "/health")


def peer(name: str):
    port = free_port()
    module = {"bentoml": "bench.peers.bentoml_server", "ray serve": "bench.peers.ray_server"}[name]
    cmd = [str(PEERS_PYTHON), "-m", module, "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    body = list_body if name == "bentoml" else native_body
    health = url + ("/readyz" if name == "bentoml" else "/health")  # BentoML's own readiness probe
    return Target(name, url + "/v1/retrieve", body), process(name, cmd, {}, health, 300)


# The V2 peers, each in its own venv (`make bench-peers` makes them): module, venv, readiness path.
V2_PEERS = {
    "mlserver": ("bench.peers.mlserver_server", ".venv-peers-mlserver", "/v2/health/ready"),
    "kserve": ("bench.peers.kserve_server", ".venv-peers-kserve", "/v2/health/ready"),
    "litserve": ("bench.peers.litserve_server", ".venv-peers-litserve", "/health"),
}


def v2_service(name: str = "service v2"):
    target, ctx = service(name)
    target.url = target.url.replace("/v1/retrieve", f"/v2/models/{V2_MODEL}/infer")
    target.body = v2_body
    return target, ctx


def v2_peer(name: str):
    module, venv, ready = V2_PEERS[name]
    port = free_port()
    cmd = [str(ROOT / venv / "bin" / "python"), "-m", module, "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    target = Target(name, f"{url}/v2/models/{V2_MODEL}/infer", v2_body)
    return target, process(name, cmd, {}, url + ready, 300)


# ---------------------------------------------------------------------------------------------- metrics


def batch_histogram(metrics_url: str) -> dict[float, float]:
    """Cumulative counts of fws_batch_size_rows (all models summed) by upper bound `le`."""
    text = httpx.get(metrics_url, timeout=10).text
    counts: dict[float, float] = {}
    for m in re.finditer(r'^fws_batch_size_rows_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)$', text, re.M):
        le = float(m.group(1))
        counts[le] = counts.get(le, 0.0) + float(m.group(2))
    return counts


def distribution(before: dict[float, float], after: dict[float, float]) -> dict[str, int]:
    """Runs per batch-size range (rows) between two scrapes: {"1": n, "2-4": n, ..., ">4096": n}."""
    out: dict[str, int] = {}
    prev_le, prev_count = 0.0, 0.0
    for le in sorted(after):
        count = after[le] - before.get(le, 0.0)
        runs = round(count - prev_count)
        lo, hi = int(prev_le) + 1, int(le) if le != float("inf") else 0
        label = str(hi) if lo == hi else f"{lo}-{hi}"
        if runs:
            out[label if le != float("inf") else f">{int(prev_le)}"] = runs
        prev_le, prev_count = le, count
    return out


def rows_and_runs(metrics_url: str) -> tuple[float, float]:
    text = httpx.get(metrics_url, timeout=10).text
    s = sum(float(v) for v in re.findall(r"^fws_batch_size_rows_sum\{[^}]*\} (\S+)$", text, re.M))
    c = sum(float(v) for v in re.findall(r"^fws_batch_size_rows_count\{[^}]*\} (\S+)$", text, re.M))
    return s, c


# ---------------------------------------------------------------------------------------------- parts


def fmt(cell: Cell) -> str:
    cpu = cell.extra.get("cpu_us_per_request")
    return (
        f"{cell.rps:>9,.0f} req/s  p50 {cell.p50_us / 1e3:>7.2f} ms  p99 {cell.p99_us / 1e3:>7.2f} ms"
        + (f"  CPU/req {cpu:>5.0f} µs" if isinstance(cpu, float) else "")
        + (f"  errors {cell.errors}" if cell.errors else "")
    )


def server_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a server process and its children (uvicorn's workers, peers' daemons).

    Server CPU per request is steadier than req/s on a shared machine: another process taking a core slows
    the server down, but costs it little CPU per request."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def run_grid(
    servers: list[tuple[Target, contextlib.AbstractContextManager]], clients: list[int], args, wrk: str | None
) -> dict[str, dict[int, Cell]]:
    """Every server at every concurrency, interleaved (one level at a time across all servers)."""
    results: dict[str, dict[int, Cell]] = {t.name: {} for t, _ in servers}
    with contextlib.ExitStack() as stack:
        for target, ctx in servers:
            target.pid = getattr(stack.enter_context(ctx), "pid", None)
            load(target, 8, min(1.0, args.duration), wrk)  # warm-up: connections, caches, lazy imports
        for c in clients:
            rounds: dict[str, list[Cell]] = {t.name: [] for t, _ in servers}
            # Servers alternate within every round, and each round starts one server later than the one
            # before: no server always follows the same one (a position in the round can bias its cells).
            for i in range(max(1, getattr(args, "rounds", 1))):
                for target, _ in servers[i % len(servers) :] + servers[: i % len(servers)]:
                    rounds[target.name].append(measure(target, c, args.duration, wrk))
            for target, _ in servers:
                cells = sorted(rounds[target.name], key=lambda cell: cell.rps)
                cell = cells[len(cells) // 2]  # the median round by req/s
                if len(cells) > 1:
                    cell.extra["rounds_rps"] = [round(x.rps) for x in rounds[target.name]]
                    cell.extra["rounds_cpu_us_per_request"] = rounds_cpu = [
                        round(cpu, 1)
                        for x in rounds[target.name]
                        if isinstance(cpu := x.extra.get("cpu_us_per_request"), float)
                    ]
                    if "mean_batch_rows" in cell.extra:
                        cell.extra["rounds_mean_batch_rows"] = [
                            round(float(x.extra["mean_batch_rows"]), 1) for x in rounds[target.name]
                        ]
                results[target.name][c] = cell
                extra = ""
                if "mean_batch_rows" in cell.extra:
                    extra = f"  mean batch {cell.extra['mean_batch_rows']:.1f} rows"
                if len(cells) > 1:
                    extra += f"  (median of rounds {cell.extra['rounds_rps']}"
                    extra += f"; CPU/req µs {rounds_cpu})" if rounds_cpu else ")"
                print(f"  {target.name:<22} {c:>4} clients {fmt(cell)}{extra}", flush=True)
    return results


def run_isolated(
    factories: list[Callable[[], tuple[Target, contextlib.AbstractContextManager]]],
    clients: list[int],
    args,
    wrk: str | None,
) -> dict[str, dict[int, Cell]]:
    """Like `run_grid`, but each server runs alone: started, warmed up, measured, stopped, then the next;
    `--rounds` repeats the whole sequence (servers still alternate) and the median round is reported."""
    rounds: dict[str, dict[int, list[Cell]]] = {}
    for _ in range(max(1, getattr(args, "rounds", 1))):
        for factory in factories:
            target, ctx = factory()
            with ctx as proc:
                target.pid = getattr(proc, "pid", None)
                load(target, 8, min(1.0, args.duration), wrk)  # warm-up
                for c in clients:
                    rounds.setdefault(target.name, {}).setdefault(c, []).append(
                        measure(target, c, args.duration, wrk)
                    )
    results: dict[str, dict[int, Cell]] = {}
    for name, by_clients in rounds.items():
        for c, cells in by_clients.items():
            ordered = sorted(cells, key=lambda cell: cell.rps)
            cell = ordered[len(ordered) // 2]
            extra = ""
            if len(cells) > 1:
                cell.extra["rounds_rps"] = [round(x.rps) for x in cells]
                extra = f"  (median of rounds {cell.extra['rounds_rps']}, each server alone)"
            results.setdefault(name, {})[c] = cell
            print(f"  {name:<22} {c:>4} clients {fmt(cell)}{extra}", flush=True)
    return results


def measure(target: Target, clients: int, duration: float, wrk: str | None) -> Cell:
    """One cell, with the batch-size distribution the service's own metrics recorded during it."""
    before = batch_histogram(target.metrics_url) if target.metrics_url else None
    rows0 = rows_and_runs(target.metrics_url) if target.metrics_url else None
    cpu0 = server_cpu_s(target.pid) if target.pid else None
    cell = load(target, clients, duration, wrk)
    if target.pid and cpu0 is not None and cell.requests:
        cell.extra["cpu_us_per_request"] = (server_cpu_s(target.pid) - cpu0) * 1e6 / cell.requests
    if target.metrics_url and before is not None and rows0 is not None:
        rows1 = rows_and_runs(target.metrics_url)
        runs = rows1[1] - rows0[1]
        cell.extra["batches"] = distribution(before, batch_histogram(target.metrics_url))
        cell.extra["mean_batch_rows"] = (rows1[0] - rows0[0]) / runs if runs else 0.0
    return cell


def median_cpu_ratio(cell: Cell, ref: Cell) -> str:
    """With --rounds: the ratio of the medians of every round's CPU per request (steadier than the CPU of the
    median round by req/s)."""
    import statistics

    mine, theirs = cell.extra.get("rounds_cpu_us_per_request"), ref.extra.get("rounds_cpu_us_per_request")
    if not (isinstance(mine, list) and isinstance(theirs, list) and mine and theirs):
        return ""
    return f", median CPU/req of rounds ×{statistics.median(mine) / statistics.median(theirs):.2f}"


def ratio_lines(results: dict[str, dict[int, Cell]], name: str, ref: str) -> list[str]:
    lines = []
    for c, cell in results[name].items():
        r = results[ref].get(c)
        if r and r.rps and r.p50_us and r.p99_us:
            cpu, ref_cpu = cell.extra.get("cpu_us_per_request"), r.extra.get("cpu_us_per_request")
            lines.append(
                f"  {name} / {ref} at {c:>3} clients: req/s ×{cell.rps / r.rps:.2f}, "
                f"p50 ×{cell.p50_us / r.p50_us:.2f}, p99 ×{cell.p99_us / r.p99_us:.2f}"
                + (
                    f", CPU/req ×{cpu / ref_cpu:.2f}"
                    if isinstance(cpu, float) and isinstance(ref_cpu, float)
                    else ""
                )
                + median_cpu_ratio(cell, r)
            )
    return lines


def baseline_names(trees: list[Path]) -> list[str]:
    """`service (baseline)` for one tree; with several (a bisect), each named after its directory."""
    if len(trees) == 1:
        return ["service (baseline)"]
    names: list[str] = []
    for tree in trees:
        name = f"service ({tree.resolve().name})"
        names.append(name if name not in names else f"{name} #{len(names) + 1}")
    return names


def part_overhead(args, wrk):
    print("== serving overhead: /v1/retrieve vs floor (bare FastAPI) vs naive (FastAPI + ORT, no batching)")
    env = args.service_env
    servers = []
    if not args.skip_references:
        servers += [
            uvicorn_app("floor", "bench.serving_apps:floor_app"),
            uvicorn_app("naive", "bench.serving_apps:naive_app"),
        ]
    servers.append(service("service", env))
    # the service from other trees (e.g. `git worktree add --detach <dir> <commit>`): before/after, same run
    trees = args.baseline_tree or []
    for name, tree in zip(baseline_names(trees), trees, strict=True):
        servers.append(service(name, env, root=tree.resolve()))
    results = run_grid(servers, args.clients, args, wrk)
    lines = []
    if not args.skip_references:
        lines += ratio_lines(results, "service", "floor") + ratio_lines(results, "service", "naive")
    for name in baseline_names(trees) if trees else []:
        lines += ratio_lines(results, "service", name)
    for line in lines:
        print(line)
    return results


def env_assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("FWS_"):
        raise argparse.ArgumentTypeError(f"expected FWS_NAME=value, got {text!r}")
    return name, value


def repository_with_max_batch(max_batch_size: int) -> Path:
    """A copy of the bundled repository whose configs say `max_batch_size`: each model's config.pbtxt, not
    an FWS_ setting, decides its batching."""
    import dataclasses
    import shutil
    import tempfile

    from contract import CONFIG_FILENAME, read_config_pbtxt
    from contract.model_config import write_config_pbtxt

    root = Path(tempfile.mkdtemp(prefix=f"bench-max-batch-{max_batch_size}-"))
    shutil.copytree(ROOT / "model_repository", root, dirs_exist_ok=True)
    for path in root.glob(f"*/{CONFIG_FILENAME}"):
        config = read_config_pbtxt(path)
        if not config.stateful:
            path.write_text(write_config_pbtxt(dataclasses.replace(config, max_batch_size=max_batch_size)))
    return root


def part_batching(args, wrk):
    print("== dynamic batching on (max batch 256) vs off (max batch 1), set in the models' config.pbtxt")
    on = service("batching on", {"FWS_MODEL_REPOSITORY": str(repository_with_max_batch(256))})
    off = service("batching off", {"FWS_MODEL_REPOSITORY": str(repository_with_max_batch(1))})
    results = run_grid([on, off], args.batching_clients, args, wrk)
    for line in ratio_lines(results, "batching on", "batching off"):
        print(line)
    for c, cell in results["batching on"].items():
        print(f"  batch sizes (rows per ORT run) at {c} clients: {cell.extra.get('batches')}")
    return results


def part_workers(args, wrk):
    print("== uvicorn workers: 1 vs 2 (service, the naive server, and the floor: what the stack allows)")
    servers = [
        service("service 1 worker", workers=1),
        service("service 2 workers", workers=2),
        uvicorn_app("naive 1 worker", "bench.serving_apps:naive_app", 1),
        uvicorn_app("naive 2 workers", "bench.serving_apps:naive_app", 2),
        uvicorn_app("floor 1 worker", "bench.serving_apps:floor_app", 1),
        uvicorn_app("floor 2 workers", "bench.serving_apps:floor_app", 2),
    ]
    for t, _ in servers:
        t.metrics_url = None  # /metrics is per worker process: a scrape sees one of them
    results = run_grid(servers, [64], args, wrk)
    for line in ratio_lines(results, "service 2 workers", "service 1 worker"):
        print(line)
    for line in ratio_lines(results, "naive 2 workers", "naive 1 worker"):
        print(line)
    for line in ratio_lines(results, "floor 2 workers", "floor 1 worker"):
        print(line)
    for line in ratio_lines(results, "service 2 workers", "floor 2 workers"):
        print(line)
    return results


def part_peers(args, wrk):
    print("== peers: BentoML and Ray Serve on the same ONNX graphs, vs the service")
    if not PEERS_PYTHON.exists():
        print(f"  skipped: {PEERS_PYTHON} missing (run `make bench-peers` to build the peers' venv)")
        return {}
    factories: list[Callable[[], tuple[Target, contextlib.AbstractContextManager]]] = [
        lambda: service("service"),
        lambda: uvicorn_app("naive", "bench.serving_apps:naive_app"),
    ]
    for name, module in (("bentoml", "bentoml"), ("ray serve", "ray")):
        found = (
            subprocess.run([str(PEERS_PYTHON), "-c", f"import {module}"], capture_output=True).returncode == 0
        )
        if found:
            factories.append(lambda name=name: peer(name))
        else:
            print(f"  {name}: not installed in {PEERS_PYTHON.parent.parent}, skipped")
    # One server up at a time: Ray's daemons (GCS, raylet, dashboard) and BentoML's workers use CPU even when
    # idle, which would be taken from whichever server is under load on these 2 cores.
    results = run_isolated(factories, [64], args, wrk)
    for name in results:
        if name != "service":
            lines = ratio_lines(results, "service", name)
            print("\n".join(lines))
    return results


def part_v2peers(args, wrk):
    print(
        "== V2 peers: MLServer, KServe, LitServe vs the service, V2 JSON, one row per request "
        f"({V2_MODEL}), one worker each, at 1 and 64 clients"
    )
    factories: list[Callable[[], tuple[Target, contextlib.AbstractContextManager]]] = [lambda: v2_service()]
    for name, (_module, venv, _ready) in V2_PEERS.items():
        if (ROOT / venv / "bin" / "python").exists():
            factories.append(lambda name=name: v2_peer(name))
        else:
            print(f"  {name}: no {venv} (make bench-peers builds it), skipped")
    results = run_isolated(factories, args.v2_clients, args, wrk)
    for name in results:
        if name != "service v2":
            print("\n".join(ratio_lines(results, "service v2", name)))
    return results


PARTS = {
    "overhead": part_overhead,
    "batching": part_batching,
    "workers": part_workers,
    "peers": part_peers,
    "v2peers": part_v2peers,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="overhead,batching,workers", help=f"comma list of {','.join(PARTS)}")
    p.add_argument("--clients", default="1,16,64,256", help="concurrency levels of the overhead part")
    p.add_argument("--batching-clients", default="64,256")
    p.add_argument("--v2-clients", default="1,64", help="concurrency levels of the v2peers part")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load per cell")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every cell this many times, servers alternating, and report the median (noisy hosts)",
    )
    p.add_argument("--loadgen", choices=("auto", "wrk", "httpx"), default="auto")
    p.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    p.add_argument(
        "--baseline-tree",
        type=Path,
        action="append",
        help="overhead part: also run the service of this source tree (before/after a change, same run); "
        "repeat it to compare several trees in one run (a bisect)",
    )
    p.add_argument(
        "--service-env",
        type=env_assignment,
        action="append",
        default=[],
        metavar="FWS_NAME=VALUE",
        help="overhead part: a setting for every service started (this tree's and the baselines'); "
        "servers otherwise run with no FWS_* variable but the bench's own; repeatable",
    )
    p.add_argument(
        "--skip-references",
        action="store_true",
        help="overhead part: leave out the floor and naive servers (service vs baselines only)",
    )
    p.add_argument("--json", type=Path, help="also write every cell as JSON here")
    p.add_argument("--plot", type=Path, help="write a PNG of the overhead part here")
    p.add_argument("--v2peers-plot", type=Path, help="write a PNG of the v2peers part here")
    return p


def plot_v2peers(results: dict[str, dict[int, Cell]], path: Path) -> None:
    """One bar per server: req/s, p99 and server CPU per request at the most clients, p50 at the fewest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    many = max(c for cells in results.values() for c in cells)
    few = min(c for cells in results.values() for c in cells)

    def cpu(cell: Cell) -> float:
        value = cell.extra.get("cpu_us_per_request")
        return float(value) if isinstance(value, float) else 0.0

    panels = [
        (f"req/s at {many} clients (higher is better)", [results[n][many].rps for n in names], "%.0f"),
        (f"p99 ms at {many} clients", [results[n][many].p99_us / 1e3 for n in names], "%.1f"),
        (f"server CPU µs per request at {many} clients", [cpu(results[n][many]) for n in names], "%.0f"),
        (
            f"p50 ms at {few} client{'s' if few > 1 else ''}",
            [results[n][few].p50_us / 1e3 for n in names],
            "%.2f",
        ),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    colors = ["tab:green" if n.startswith("service") else "tab:gray" for n in names]
    for ax, (title, values, fmt_) in zip(axes, panels, strict=True):
        bars = ax.bar(names, values, color=colors)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=20, labelsize=9)
        ax.bar_label(bars, fmt=fmt_, fontsize=8)
    fig.suptitle(
        "V2 JSON, one row per request, one worker each (median round; shared 2-core host)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_overhead(results: dict[str, dict[int, Cell]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, cells in results.items():
        xs = sorted(cells)
        a.plot(xs, [cells[c].rps for c in xs], marker="o", label=name)
        b.plot(xs, [cells[c].p99_us / 1e3 for c in xs], marker="o", label=name)
    for ax, title in ((a, "requests/s"), (b, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    b.set_yscale("log")
    a.legend()
    fig.suptitle("/v1/retrieve: service vs bare FastAPI floor vs naive FastAPI+onnxruntime")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",")]
    args.batching_clients = [int(c) for c in args.batching_clients.split(",")]
    args.v2_clients = [int(c) for c in args.v2_clients.split(",")]
    args.service_env = dict(args.service_env)
    wrk = None if args.loadgen == "httpx" else find_wrk(not args.no_install)
    if args.loadgen == "wrk" and not wrk:
        print("error: wrk not found", file=sys.stderr)
        return 2
    print(
        f"load generator: {wrk or 'bench.loadgen (asyncio httpx)'}, {args.duration:g} s per cell, "
        f"loadavg before {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    everything = {}
    for part in args.parts.split(","):
        everything[part] = PARTS[part](args, wrk)
    print(f"loadavg after {os.getloadavg()[0]:.2f}")
    if args.plot and everything.get("overhead"):
        plot_overhead(everything["overhead"], args.plot)
    if args.v2peers_plot and everything.get("v2peers"):
        plot_v2peers(everything["v2peers"], args.v2peers_plot)
    if args.json:
        payload = {
            part: {
                name: {str(c): {"rps": cell.rps, **cell.__dict__} for c, cell in cells.items()}
                for name, cells in res.items()
            }
            for part, res in everything.items()
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
