"""A registered instance as a chat backend: ``direct`` (the ``openai`` backend at its endpoint) or ``tunnel``.

Either way the chat pipeline sees one more :class:`~kernel.backends.base.Backend`. An instance that is
unreachable, or stops answering, fails with 503 and a ``Retry-After``.
"""

from gevent.queue import Empty

from kernel.backends.base import Backend, BackendTimeout, BackendUnavailable
from kernel.backends.openai import OpenAIBackend
from kernel.instruments import TUNNEL_CHATS

from .tunnel import Done


class DirectBackend(Backend):
    """A direct instance: its pooled :class:`OpenAIBackend`, with the registry's view of failures."""

    name = "direct"

    def __init__(self, config, upstream, retry_after):
        super().__init__(config)
        self.upstream = upstream
        self.retry_after = retry_after

    def model_for(self, requested):
        return self.upstream.model_for(requested)

    def generate(self, request, result):
        try:
            yield from self.upstream.generate(request, result)
        except BackendUnavailable as exc:
            exc.retry_after = exc.retry_after or self.retry_after
            raise
        except BackendTimeout as exc:
            raise BackendUnavailable(f"the instance stopped answering: {exc.message}",
                                     retry_after=self.retry_after) from exc


class DirectPool:
    """One :class:`OpenAIBackend` per direct instance per worker, so its connection pool is reused.

    Keyed by what the backend is built from: an instance whose endpoint, key or model changed (in any
    worker) gets a new one.
    """

    def __init__(self, config):
        self.config = config
        self._backends = {}

    def get(self, row):
        key = (row["endpoint"], row["api_key"], row["model"])
        cached = self._backends.get(row["instance_id"])
        if cached is not None and cached[0] == key:
            return cached[1]
        backend = OpenAIBackend(self.config, base_url=row["endpoint"], api_key=row["api_key"] or "",
                                model=row["model"] or "")
        self._backends[row["instance_id"]] = (key, backend)
        if cached is not None:
            cached[1].close()
        return backend

    def forget(self, instance_id):
        cached = self._backends.pop(instance_id, None)
        if cached is not None:
            cached[1].close()


class TunnelBackend(Backend):
    """A tunnel instance: each chat is a stream on the instance's WebSocket."""

    name = "tunnel"

    def __init__(self, config, connection, model, retry_after):
        super().__init__(config)
        self.connection = connection
        self.model = model
        self.retry_after = retry_after
        self.silence_s = config["KERNEL_UPSTREAM_TIMEOUT_S"]

    def model_for(self, requested):
        return requested or self.model or "default"

    def generate(self, request, result):
        stream = self.connection.start(request, self.retry_after)
        TUNNEL_CHATS.inc()
        try:
            while True:
                try:
                    item = stream.get(self.silence_s)
                except Empty:
                    raise BackendUnavailable(f"the instance sent nothing for {self.silence_s:g} s",
                                             retry_after=self.retry_after) from None
                if isinstance(item, str):
                    yield item
                elif isinstance(item, Done):
                    result.finish_reason = item.finish_reason
                    result.set_usage(item.prompt_tokens, item.completion_tokens)
                    return
                else:
                    raise item
        finally:
            TUNNEL_CHATS.dec()
            self.connection.finish(stream)
