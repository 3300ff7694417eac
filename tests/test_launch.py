"""medln.launch: `medln app` serves the app (the same one app.py and the Space start),
`medln --version`, and a clear message where gradio is not installed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from appserver import free_port
from conftest import REPO, run_cli


def test_version():
    from medln import __version__

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"medln {__version__}"


def test_app_help_lists_its_options():
    proc = run_cli("app", "--help")
    assert proc.returncode == 0
    assert all(flag in proc.stdout for flag in ("--port", "--host", "--share"))


def test_app_without_gradio_says_what_to_install():
    """The core installs without gradio (pyproject: extra `app`); `medln app` then says so."""
    code = ("import sys\nsys.modules['gradio'] = None  # as if not installed\n"
            "from medln.__main__ import main\nsys.exit(main(['app']))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "pip install 'medln[app]'" in proc.stderr and "Traceback" not in proc.stderr


def test_app_py_is_a_shim_that_imports_nothing_early():
    """app.py only calls medln.launch.main() (launch(), a bad setting as one line), which configures
    storage before huggingface_hub is imported."""
    lines = (REPO / "app.py").read_text().splitlines()
    assert len(lines) <= 5 and "SystemExit(main())" in lines[-1]
    code = "import sys, runpy\nrunpy.run_path('app.py')\nprint(sorted(m for m in ('huggingface_hub', 'gradio', 'torch') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr[-2000:]


@pytest.mark.slow  # `medln app` as a process, fetched over HTTP: end to end
def test_medln_app_serves_the_page(tmp_path):
    port = free_port()
    env = {**os.environ, "MEDLN_RUNS": str(tmp_path / "runs"), "MEDLN_DATA_ROOT": str(tmp_path / "no-volume"),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "medln", "app", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.time() + 240, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    page = json.loads(response.read())
                break
            except OSError:
                time.sleep(1)
        assert page is not None, proc.stdout.read() if proc.poll() is not None else "no answer in 240 s"
        assert "MedLN" in json.dumps(page)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_docker_image_installs_the_package():
    """No Docker engine here: the Dockerfile is checked as text (hadolint DL3025: JSON form)."""
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install --no-deps /tmp/medln", text, re.M)
    assert re.search(r'^CMD \["medln", "app"\]$', text, re.M)
    assert all(line.split(None, 1)[1].startswith("[") for line in re.findall(r"^\s*CMD .*$", text, re.M))
