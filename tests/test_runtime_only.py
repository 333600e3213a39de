"""The deployment README promises: relaying to an upstream needs only requirements.txt.

A fresh virtual environment gets exactly that (at the locked versions), then gunicorn serves the
checkout from it and a chat goes through. Nothing of the package is installed there, so the built-in
backends must be found without package metadata.
"""

import json
import subprocess
import sys

import pytest
import requests

from tests.conftest import ROOT, Server


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory):
    venv = tmp_path_factory.mktemp("runtime") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(ROOT / "requirements.txt"), "-c", str(ROOT / "requirements.lock")],
        check=True, capture_output=True,
    )
    return python


def test_the_venv_holds_only_the_runtime(bare_venv):
    code = "import importlib.util as u, json; print(json.dumps({m: bool(u.find_spec(m)) for m in %r}))"
    modules = ["flask", "gunicorn", "gevent", "jsonschema", "urllib3", "llama_cpp", "openai", "pytest"]
    found = json.loads(subprocess.run([str(bare_venv), "-c", code % modules], capture_output=True, text=True,
                                      check=True, cwd="/").stdout)
    assert found == {m: m not in ("llama_cpp", "openai", "pytest") for m in modules}
    metadata = subprocess.run([str(bare_venv), "-m", "pip", "show", "kernel-chat"], capture_output=True)
    assert metadata.returncode != 0  # the package itself is not installed


def test_a_relay_deployment_chats_from_requirements_txt_alone(bare_venv, upstream, tmp_path):
    env = {"KERNEL_UPSTREAM_URL": upstream.url, "KERNEL_DATA_DIR": str(tmp_path / "data")}
    server = Server(env, tmp_path / "gunicorn.log", python=str(bare_venv))
    try:
        response = requests.post(server.url + "/api/kernel2/chat", timeout=30,
                                 json={"messages": [{"role": "user", "content": "only the runtime"}], "stream": False})
        assert response.status_code == 200, server.log()
        assert response.json()["choices"][0]["message"]["content"] == "only the runtime"
        assert "using the 'openai' backend" in server.log()
    finally:
        server.stop()
