"""README.md's memory-session examples, executed as written: the bash block with the real curl (each
`# => ` line is the answer of the command before it), the Python block as a script, both against a real
server."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.integration.server import REPO_ROOT, Server
from tests.integration.test_readme import README_URL, matches

SECTION = "## Memory sessions"


def blocks(language: str) -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return re.findall(rf"```{language}\n(.*?)```", text[start:end], flags=re.S)


def test_the_readme_session_walkthrough_answers_as_shown(server: Server) -> None:
    (block,) = blocks("bash")
    lines = block.replace("\\\n", " ").splitlines()
    script, expected = ["set -e"], []
    for i, line in enumerate(lines):
        if line.startswith(("curl ", "SID=")):
            if line.startswith("curl "):
                script.append(f"echo '@@@ {len(expected)}'")
                nxt = lines[i + 1] if i + 1 < len(lines) else ""
                expected.append(nxt[len("# => ") :] if nxt.startswith("# => ") else None)
            script.append(line.replace(README_URL, server.url))
            script.append("echo")
    run = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    outputs = [part.split("\n", 1)[1].strip() for part in run.stdout.split("@@@ ")[1:]]
    assert len(outputs) == len(expected) >= 6
    for out, want in zip(outputs, expected, strict=True):
        if want is not None:
            matches(json.loads(out), json.loads(want))


def test_the_readme_session_python_example_prints_what_it_says(server: Server) -> None:
    (block,) = blocks("python")
    code = block.replace(README_URL, server.url)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "3 j"
