"""README.md examples run against a real server: the curl examples of the native serving section (with the
real curl) and the tritonclient.grpc examples of the gRPC section."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from typing import Any

import pytest

from tests.integration.server import REPO_ROOT, Server

SECTION = "## Serving: the native REST API"
README_URL = "http://127.0.0.1:8000"


def examples() -> list[tuple[list[str], str | None]]:
    """(curl argv, expected response or None) for every curl command in the section's bash blocks."""
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end > 0 else len(text)]
    found: list[tuple[list[str], str | None]] = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        lines = block.replace("\\\n", " ").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("curl "):
                nxt = lines[i + 1] if i + 1 < len(lines) else ""
                expected = nxt[len("# => ") :] if nxt.startswith("# => ") else None
                found.append((shlex.split(line), expected))
    return found


def matches(actual: Any, expected: Any, where: str = "$") -> None:
    """`expected` as shown in the README: "..." matches anything, floats within 0.02, the rest exactly."""
    if expected == "...":
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), f"{where}: {actual} vs {expected}"
        for k, v in expected.items():
            matches(actual[k], v, f"{where}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual} vs {expected}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            matches(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=0.02), f"{where}: {actual} vs {expected}"
    else:
        assert actual == expected, f"{where}: {actual!r} vs {expected!r}"


def test_the_readme_has_curl_examples_for_every_native_endpoint() -> None:
    urls = {next(a for a in argv if a.startswith("http")) for argv, _ in examples()}
    for path in ("/v1/retrieve", "/v1/retrieve/batch", "/v2/health/ready", "/metrics"):
        assert README_URL + path in urls


@pytest.mark.parametrize(
    ("argv", "expected"), examples(), ids=lambda x: " ".join(x)[:60] if isinstance(x, list) else ""
)
def test_each_readme_curl_example_works_as_shown(
    server: Server, argv: list[str], expected: str | None
) -> None:
    argv = [a.replace(README_URL, server.url) for a in argv]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    if expected is not None:
        matches(json.loads(run.stdout), json.loads(expected))
    elif argv[-1].endswith("/metrics"):
        assert "fws_http_requests_total" in run.stdout
    else:
        json.loads(run.stdout)


GRPC_SECTION = "## Serving: Open Inference Protocol over gRPC"
GRPC_README_TARGET = "127.0.0.1:8001"


def grpc_examples() -> list[str]:
    """The python blocks of the gRPC section, in order (later blocks use names the first one made)."""
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(GRPC_SECTION)
    end = text.find("\n## ", start + len(GRPC_SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_the_readme_has_tritonclient_grpc_examples():
    blocks = grpc_examples()
    assert len(blocks) == 2
    assert "import tritonclient.grpc" in blocks[0] and GRPC_README_TARGET in blocks[0]
    assert "async_stream_infer" in blocks[1]


def test_the_readme_tritonclient_grpc_examples_print_what_they_say(server: Server, capsys):
    namespace: dict[str, Any] = {}
    expected: list[str] = []
    for block in grpc_examples():
        code = block.replace(GRPC_README_TARGET, server.grpc_target)
        expected += [line.rsplit("# ", 1)[1] for line in block.splitlines() if line.startswith("print(")]
        exec(compile(code, "README.md", "exec"), namespace)
    namespace["client"].close()
    assert capsys.readouterr().out.splitlines() == expected
