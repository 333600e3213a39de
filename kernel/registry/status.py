"""Status of direct instances: ``GET {endpoint}/models`` every ``KERNEL_PROBE_INTERVAL_S`` seconds.

Results go to SQLite, so every worker answers the same. With several workers one prober runs at a
time: the worker holding the ``probe`` lease (renewed each round; taken over when it lapses).
"""

import logging
import os
import urllib.request
from urllib.parse import urlsplit

import gevent
import urllib3
from gevent.pool import Pool
from urllib3.exceptions import HTTPError

from kernel.db import offload
from kernel.store import StoreError, connect

from . import store as instances

log = logging.getLogger("kernel.registry")

PARALLEL_PROBES = 50
PROBE_TIMEOUT = urllib3.Timeout(connect=3.0, read=3.0)


def _manager(url):
    """A one-off connection manager, with the environment's proxy and CA bundle, as chats have them."""
    parts = urlsplit(url)
    bypass = urllib.request.proxy_bypass(parts.hostname or "")
    proxy = None if bypass else urllib.request.getproxies().get(parts.scheme)
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    options = {"retries": False, **({"ca_certs": ca_bundle} if ca_bundle else {})}
    return urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)


def _probe(registry, row):
    """Whether the endpoint answers ``GET /models`` with 200, on a new connection.

    Not on the chat pool's kept-alive connections: those can outlive a server that no longer accepts
    any, and a probe is there to tell whether the next chat will get through.
    """
    url = row["endpoint"].rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {row['api_key']}"} if row["api_key"] else {}
    manager = None
    try:
        manager = _manager(url)
        response = manager.request("GET", url, headers=headers, timeout=PROBE_TIMEOUT, redirect=False)
        problem = None if response.status == 200 else f"GET /models answered {response.status}"
    except (HTTPError, OSError, ValueError) as exc:  # ValueError: an endpoint or key urllib3 cannot use
        problem = f"GET /models failed: {type(exc).__name__}"
    finally:
        if manager is not None:
            manager.clear()
    if problem and row["status"] == "online":
        log.warning("instance %s went offline: %s", row["instance_id"], problem)
    return problem is None


def _record(registry, conn, rows, results):
    offload(instances.record_probes, conn, results)
    for row in rows:
        ok = results.get(row["instance_id"])
        if ok and row["status"] != "online":
            log.info("instance %s is online (%s answers)", row["instance_id"], row["endpoint"])


def probe_all(registry, conn):
    rows = instances.direct_instances(conn)
    if not rows:
        return
    pool = Pool(PARALLEL_PROBES)
    outcomes = pool.imap_unordered(lambda row: (row["instance_id"], _probe(registry, row)), rows)
    _record(registry, conn, rows, dict(outcomes))


def probe_one(registry, instance_id):
    """Probe one instance now (just registered or changed), whichever worker holds the lease."""
    conn = connect(registry.db_path)
    try:
        row = instances.get_full(conn, instance_id)
        if row["mode"] == "direct":
            _record(registry, conn, [row], {instance_id: _probe(registry, row)})
    except StoreError as exc:
        log.debug("probe of %s skipped: %s", instance_id, exc)
    finally:
        conn.close()


def probe_loop(registry):
    interval = registry.config["KERNEL_PROBE_INTERVAL_S"]
    conn = connect(registry.db_path)
    while True:
        try:
            if offload(instances.take_lease, conn, "probe", registry.holder, interval * 3):
                probe_all(registry, conn)
        except Exception:  # keep probing whatever one round ran into
            log.exception("probing direct instances failed")
        gevent.sleep(interval)
