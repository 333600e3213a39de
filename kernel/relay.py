"""Hand a generation's items from the greenlet that produces them to the one that writes the response.

The producer runs in its own greenlet so the writer can wake up while the backend is silent: to send
keep-alive pings and to notice a client that has gone away. A bounded queue gives back-pressure, and the
writer takes everything waiting at once, so a fast backend's deltas reach the socket in one write. The
first item is the exception: the producer steps aside once it is queued, so the client's first chunk
does not wait while a fast backend's whole answer is read and parsed behind it.
"""

import gevent
from gevent.queue import Empty, Queue

_END = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc):
        self.exc = exc


class Relay:
    def __init__(self, iterable, maxsize=256):
        self._queue = Queue(maxsize)
        self._failure = None
        self._ended = False
        self._greenlet = gevent.spawn(self._produce, iterable)

    def _produce(self, iterable):
        iterator = iter(iterable)
        try:
            first = True
            for item in iterator:
                self._queue.put(item)
                if first:
                    first = False
                    gevent.sleep(0)  # let the writer send the first item now
            self._queue.put(_END)
        except Exception as exc:  # handed to the writer, which reports it; GreenletExit passes through
            self._queue.put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def next_batch(self, timeout=None):
        """All items waiting, as a list: ``[]`` if none came within ``timeout`` s, ``None`` at the end.

        Raises the producer's exception once the items produced before it have been handed over.
        """
        if self._failure is not None:
            raise self._failure
        if self._ended:
            return None
        try:
            item = self._queue.get_nowait()  # no timer to set up when items are waiting
        except Empty:
            try:
                item = self._queue.get(timeout=timeout)
            except Empty:
                return []
        batch = []
        while True:
            if item is _END:
                self._ended = True
                break
            if isinstance(item, _Failure):
                self._failure = item.exc
                break
            batch.append(item)
            try:
                item = self._queue.get_nowait()
            except Empty:
                break
        if batch:
            return batch
        if self._failure is not None:
            raise self._failure
        return None

    def close(self, timeout=2.0):
        """Stop the producer (its backend closes its upstream connection) and wait for it a little."""
        if not self._greenlet.dead:
            self._greenlet.kill(block=True, timeout=timeout)
