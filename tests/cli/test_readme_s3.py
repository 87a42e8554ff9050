"""The documentation's object-storage example (user guide, clusters and object storage) runs as
written, against the tests' own S3 server (the fixture stands in for its server start and
``export`` lines)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("s3fs")

README = Path(__file__).resolve().parents[2] / "docs" / "user_guide" / "clusters.md"
#: The comment that precedes the example on the page.
MARKER = "<!-- s3-example:"
#: Lines of the example that the fixtures do instead (installing, starting the server, the environment).
DONE_BY_FIXTURES = ("pip install", "python -m moto.server", "export ")


def example_lines():
    text = README.read_text()
    block = re.search(r"```\n(.*?)```", text[text.index(MARKER) :], re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith(DONE_BY_FIXTURES)]


def test_the_readme_s3_example_runs_as_written(s3):
    lines = example_lines()
    assert any(line.startswith("dnmf fit s3://") for line in lines) and any("resume" in line for line in lines)
    outputs = []
    for line in lines:
        words = shlex.split(line, comments=True)
        command = {"python": [sys.executable], "dnmf": [sys.executable, "-m", "dnmf.cli"]}[words[0]] + words[1:]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        outputs.append(done.stdout)
    assert "dnmf fit result" in outputs[-1]
