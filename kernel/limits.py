"""Concurrent streams per client, so one client cannot take every connection of a worker.

Counted per worker process (a worker's connections are what one client could exhaust); a client is its
chat key when keys are set, else its address.
"""

from collections import Counter


class StreamLimit:
    def __init__(self, limit):
        self.limit = limit  # 0: no limit
        self.open = Counter()

    def acquire(self, client):
        """Count one more stream for ``client``; ``False`` if it already has ``limit`` open."""
        if self.limit and self.open[client] >= self.limit:
            return False
        self.open[client] += 1
        return True

    def release(self, client):
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]
