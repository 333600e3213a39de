"""A local model that cannot decode stops the server at start, with one line saying why.

The native library is replaced by a stand-in that segfaults at the first decode (tests/stubs), so this
runs on every machine, with or without llama-cpp-python.
"""

import os
import subprocess
import sys
import time

import pytest

from kernel.backends.local import ModelBroken, probe
from tests.conftest import ROOT, free_port, spawn

CRASHING = str(ROOT / "tests" / "stubs" / "crashing_llama")


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF")
    return str(path)


def test_probe_turns_a_native_crash_into_one_clear_line(model_file, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", CRASHING)
    with pytest.raises(ModelBroken) as caught:
        probe(model_file)
    message = str(caught.value)
    assert "\n" not in message
    assert model_file in message and "SIGSEGV" in message and "make clean run" in message


def test_probe_of_a_model_that_cannot_load_says_so(tmp_path):
    not_a_model = tmp_path / "notes.gguf"
    not_a_model.write_text("not a model")
    pytest.importorskip("llama_cpp")
    with pytest.raises(ModelBroken, match="could not be loaded"):
        probe(str(not_a_model))


def test_server_refuses_to_start_and_does_not_restart_workers(model_file, tmp_path):
    log_path = tmp_path / "gunicorn.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env.update(
        PYTHONPATH=CRASHING,
        KERNEL_BACKEND="local",
        KERNEL_LOCAL_MODEL_PATH=model_file,
        KERNEL_BIND=f"127.0.0.1:{free_port()}",
        KERNEL_DATA_DIR=str(tmp_path / "data"),
        KERNEL_WORKERS="2",
    )
    with open(log_path, "wb") as log:
        process = spawn([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
                        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        started = time.monotonic()
        try:
            code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    output = log_path.read_text(errors="replace")
    assert code != 0, output
    assert time.monotonic() - started < 60
    clear = [line for line in output.splitlines() if "crashed llama.cpp" in line]
    assert clear and model_file in clear[0] and "SIGSEGV" in clear[0], output
    assert output.count("Booting worker") <= 2, "workers were restarted in a loop"
