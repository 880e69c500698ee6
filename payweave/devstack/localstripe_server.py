"""Run localstripe (a fake Stripe API) the way the dev stack and the tests need it.

``python -m payweave.devstack.localstripe_server --port P [--host H] [--store PATH] [--from-scratch]``

Differences from ``localstripe``'s own entry point, all confined to this process:

* binds ``--host`` (loopback by default) instead of ``::`` on every interface;
* persists its store to ``--store`` (atomically, once per request instead of once per object) instead of
  the shared, hard-coded ``/tmp/localstripe.pickle``, or not at all, so parallel instances stay apart;
* honours ``Idempotency-Key`` like Stripe does: a repeated POST with the same key gets the first
  response replayed (header ``Idempotent-Replayed: true``), a concurrent duplicate waits for the first,
  and reusing a key for a different request is a 400 ``idempotency_error``. localstripe ignores the header,
  which would hide exactly the retry bugs the saga code must not have;
* lists the objects of one type from an index of that type instead of scanning the whole store. localstripe
  scans every object it ever created to list one type, and exporting a charge lists its refunds that way, so
  each PaymentIntent created cost time proportional to everything created before it (after 1,500 split
  checkouts, 80 % of localstripe's CPU was that scan, and its CPU per PaymentIntent had tripled).

Webhooks are sent by localstripe itself, unchanged (about one second after the event, signed with the
configured secret). Their configuration is not persisted: configure them after every start.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from payweave.devstack.supervisor import spawn, wait_http, with_project_on_pythonpath

log = logging.getLogger("aiohttp.access")  # localstripe logs webhook deliveries there

# Stripe keeps keys for 24 hours; a dev/test server just keeps the most recent ones.
MAX_IDEMPOTENCY_KEYS = 50_000


# -- store persistence ----------------------------------------------------------------------------------


class StorePersister:
    """Replaces localstripe's pickle-the-whole-store-on-every-object-write with one atomic write per burst.

    localstripe calls ``store.dump_to_disk()`` on every ``store[...] = obj`` and after every mutating
    request. Here that only marks the store dirty and schedules a single write for when the current
    handler step has finished, so a request that creates ten objects writes the file once.
    """

    def __init__(
        self, store: dict[str, Any], path: Path, on_load: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.store = store
        self.path = path
        self.on_load = on_load
        self._scheduled = False

    def load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                old = pickle.load(f)
        except FileNotFoundError:
            return
        except Exception as e:  # a pickle from an incompatible localstripe version, say
            log.warning("ignoring unreadable localstripe store %s: %s", self.path, e)
            return
        self.store.clear()
        self.store.update(old)
        if self.on_load is not None:
            self.on_load(self.store)

    def request_dump(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.dump()
            return
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self.dump)

    def dump(self) -> None:
        self._scheduled = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            # A plain dict: pickling the Store class would tie the file to how it was patched.
            pickle.dump(dict(self.store), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, self.path)  # a crash mid-write never leaves a truncated store behind


class TypeIndex:
    """The store's keys per object type (``"charge"`` for ``"charge:ch_…"``), each in the store's own order.

    Kept by wrapping the store's ``__setitem__`` / ``__delitem__`` (the only ways localstripe writes it); a
    bulk change (``clear``/``update`` when a saved store is loaded) is followed by ``rebuild``.
    """

    def __init__(self) -> None:
        self.by_type: dict[str, dict[str, Any]] = collections.defaultdict(dict)

    def add(self, key: str, value: Any) -> None:
        self.by_type[key.partition(":")[0]][key] = value

    def remove(self, key: str) -> None:
        self.by_type[key.partition(":")[0]].pop(key, None)

    def rebuild(self, store: dict[str, Any]) -> None:
        self.by_type.clear()
        for key, value in store.items():
            self.add(key, value)

    def objects(self, object_type: str) -> list[Any]:
        return list(self.by_type.get(object_type, {}).values())


def index_store_by_type() -> TypeIndex:
    """Make every ``_api_list_all`` read its own type from a ``TypeIndex`` (same objects, same order)."""
    from localstripe import resources

    index = TypeIndex()
    store_type = type(resources.store)
    set_item, del_item = store_type.__setitem__, store_type.__delitem__

    def setitem(self: dict[str, Any], key: str, value: Any) -> None:
        set_item(self, key, value)
        index.add(key, value)

    def delitem(self: dict[str, Any], key: str) -> None:
        del_item(self, key)
        index.remove(key)

    def list_all(
        cls: Any, /, url: str, limit: int | None = None, starting_after: str | None = None, **kwargs: Any
    ) -> Any:
        # StripeObject._api_list_all with the scan of the whole store replaced by the type's index.
        if kwargs:
            raise resources.UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        listed = resources.List(url, limit=limit, starting_after=starting_after)
        listed._list = index.objects(cls.object)
        return listed

    store_type.__setitem__ = setitem
    store_type.__delitem__ = delitem
    resources.StripeObject._api_list_all = classmethod(list_all)
    index.rebuild(resources.store)
    return index


def configure_store(path: Path | None, *, load: bool = True) -> StorePersister | None:
    """Point localstripe's store at ``path`` (None: keep everything in memory only)."""
    from localstripe.resources import store

    index = index_store_by_type()
    if path is None:
        # Instance attributes shadow the class's methods, in this process only.
        setattr(store, "dump_to_disk", lambda: None)  # noqa: B010
        setattr(store, "try_load_from_disk", lambda: None)  # noqa: B010
        return None
    persister = StorePersister(store, path, on_load=index.rebuild)
    setattr(store, "dump_to_disk", persister.request_dump)  # noqa: B010
    setattr(store, "try_load_from_disk", persister.load)  # noqa: B010
    if load:
        persister.load()
    return persister


# -- Idempotency-Key ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Recorded:
    request: tuple[str, str, str]  # method, path, parameter fingerprint
    status: int
    body: bytes
    content_type: str


def _api_key(request: web.Request) -> str:
    """Stripe scopes idempotency keys per account; the API key stands in for the account here."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme == "Basic":
        try:
            return base64.b64decode(value).decode().split(":")[0]
        except ValueError:
            return value
    return value


def _fingerprint(body: bytes, content_type: str) -> str:
    """Compare parameters, not bytes: the same form fields in another order are the same request."""
    if content_type == "application/x-www-form-urlencoded":
        fields = sorted(urllib.parse.parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
        body = json.dumps(fields).encode()
    return hashlib.sha256(body).hexdigest()


def _replayable(status: int) -> bool:
    # Stripe saves a result once the endpoint started executing, declines (402) included; requests that
    # failed validation or authentication (400, 401, 404 ...) did not execute and may be retried.
    return status < 400 or status == 402


def _idempotency_error(key: str) -> web.Response:
    message = (
        "Keys for idempotent requests can only be used with the same parameters they were first used "
        f"with. Try using a key other than '{key}' if you meant to execute a different request."
    )
    return web.json_response({"error": {"type": "idempotency_error", "message": message}}, status=400)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_idempotency_middleware(max_keys: int = MAX_IDEMPOTENCY_KEYS) -> Any:
    recorded: collections.OrderedDict[tuple[str, str], _Recorded] = collections.OrderedDict()
    locks: dict[tuple[str, str], asyncio.Lock] = {}
    lock_users: collections.Counter[tuple[str, str]] = collections.Counter()

    @web.middleware
    async def idempotency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key:
            return await handler(request)
        scope = (_api_key(request), key)
        body = await request.read()  # aiohttp caches it, so the handler can still read it
        this = (request.method, request.path, _fingerprint(body, request.content_type))
        lock = locks.setdefault(scope, asyncio.Lock())
        lock_users[scope] += 1
        try:
            async with lock:  # a concurrent duplicate waits here for the first one's result
                return await replay_or_record(request, handler, key, scope, this)
        finally:
            lock_users[scope] -= 1
            if not lock_users[scope]:  # nobody else waits: forget the lock, the result is recorded
                del lock_users[scope]
                locks.pop(scope, None)

    async def replay_or_record(
        request: web.Request, handler: Handler, key: str, scope: tuple[str, str], this: tuple[str, str, str]
    ) -> web.StreamResponse:
        previous = recorded.get(scope)
        if previous is not None:
            if previous.request != this:
                return _idempotency_error(key)
            return web.Response(
                status=previous.status,
                body=previous.body,
                headers={"Content-Type": previous.content_type, "Idempotent-Replayed": "true"},
            )
        response = await handler(request)
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            if _replayable(response.status):
                recorded[scope] = _Recorded(
                    this,
                    response.status,
                    response.body,
                    response.headers.get("Content-Type", "application/json"),
                )
                while len(recorded) > max_keys:
                    recorded.popitem(last=False)
        return response

    return idempotency_middleware


# -- the server -----------------------------------------------------------------------------------------


def build_app(store_path: Path | None, *, from_scratch: bool = False) -> web.Application:
    """localstripe's aiohttp app, patched as described above (call once per process)."""
    from localstripe.server import app

    persister = configure_store(store_path, load=not from_scratch)
    # app.middlewares is a FrozenList that aiohttp freezes at startup; before that it can be changed.
    # First in the list = outermost, so replays also cover errors rendered by localstripe's middlewares.
    app.middlewares.insert(0, make_idempotency_middleware())
    if persister is not None:

        async def flush(_: web.Application) -> None:
            persister.dump()

        app.on_cleanup.append(flush)
    return app  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--store", type=Path, default=None, help="pickle file; omitted: keep nothing")
    parser.add_argument("--from-scratch", action="store_true", help="ignore what --store holds")
    args = parser.parse_args(argv)

    app = build_app(args.store, from_scratch=args.from_scratch)
    log.setLevel(logging.DEBUG)
    log.addHandler(logging.StreamHandler())
    # shutdown_timeout: don't hang around for webhook deliveries still sleeping when asked to stop.
    web.run_app(app, host=args.host, port=args.port, access_log=log, shutdown_timeout=2, print=None)


# -- helpers for the parent process ---------------------------------------------------------------------


def localstripe_argv(
    port: int, *, host: str = "127.0.0.1", store: Path | None = None, from_scratch: bool = False
) -> list[str]:
    argv = [sys.executable, "-m", "payweave.devstack.localstripe_server", "--port", str(port), "--host", host]
    if store is not None:
        argv += ["--store", str(Path(store).absolute())]
    if from_scratch:
        argv.append("--from-scratch")
    return argv


def start_localstripe_process(
    port: int,
    store: Path | None = None,
    log_path: Path | None = None,
    *,
    host: str = "127.0.0.1",
    from_scratch: bool = False,
    wait: float | None = 30.0,
) -> subprocess.Popen[bytes]:
    """Start a localstripe child (dies with us) and, unless ``wait`` is None, wait until it answers.

    Stop it with ``payweave.devstack.supervisor.terminate(process)``.
    """
    process = spawn(
        localstripe_argv(port, host=host, store=store, from_scratch=from_scratch),
        env=with_project_on_pythonpath(),
        log_path=log_path,
    )
    if wait is not None:
        try:
            wait_until_up(f"http://{host}:{port}", wait, process=process)
        except BaseException:
            process.kill()
            process.wait()
            raise
    return process


def wait_until_up(
    base_url: str, timeout: float = 30.0, *, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until localstripe serves requests (its Stripe.js shim needs no API key)."""

    def check() -> None:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"localstripe exited with code {process.returncode}")

    wait_http(base_url.rstrip("/") + "/js.stripe.com/v3/", timeout, check=check)


def configure_webhook(
    base_url: str, url: str, secret: str, name: str = "payweave", events: Sequence[str] | None = None
) -> None:
    """Make localstripe POST every event (or only ``events``) to ``url``, signed with ``secret``."""
    fields: list[tuple[str, str]] = [("url", url), ("secret", secret)]
    fields += [("events[]", e) for e in events or ()]
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/_config/webhooks/{urllib.parse.quote(name)}",
        data=urllib.parse.urlencode(fields).encode(),
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"localstripe refused the webhook configuration: HTTP {response.status}")


if __name__ == "__main__":
    main()
