"""Sending HTTP requests: one pool of keep-alive connections per provider host, explicit timeouts
on every call, and the transport's exceptions turned into two of our own that say whether the
request may have reached the provider.

Two clients: ``urllib3`` (requests' own transport, used directly: ~2x the requests per second
of ``requests`` on this kind of machine, see the README) and ``requests`` (one Session per
worker thread). With urllib3 each host gets its own ``HTTPConnectionPool``, found by a dict
look-up of the URL's origin: no per-request pool-key normalising or URL re-parsing, which a
profile showed to cost a third of the client's CPU per message.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from urllib3 import exceptions as u3

from smsched import __version__
from smsched.providers.base import HttpRequest

USER_AGENT = f"smsched/{__version__}"


class NotSent(Exception):
    """The request never reached the provider (connection refused, connect timeout, DNS)."""


class MaybeSent(Exception):
    """The request may have reached the provider (read timeout, connection reset after sending)."""


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # case-insensitive for both clients
    body: bytes


class Transport:
    def __init__(self, *, pool_size: int = 32, connect_timeout: float = 3.0, read_timeout: float = 10.0,
                 client: str = "urllib3"):
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.client = client
        if client == "urllib3":
            self.pool_size = pool_size
            self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
            self.pools: dict[str, urllib3.HTTPConnectionPool] = {}
            self.targets: dict[str, tuple[urllib3.HTTPConnectionPool, str]] = {}
            self.lock = threading.Lock()
        elif client == "requests":
            self.local = threading.local()
            self.pool_size = pool_size
        else:
            raise ValueError(f"unknown http client {client!r}")

    def _session(self) -> requests.Session:
        session = getattr(self.local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=self.pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self.local.session = session
        return session

    def send(self, request: HttpRequest) -> HttpResponse:
        if self.client == "urllib3":
            return self._send_urllib3(request)
        return self._send_requests(request, {"User-Agent": USER_AGENT, **request.headers})

    def _target(self, url: str) -> tuple[urllib3.HTTPConnectionPool, str, str | None]:
        """The pool for the URL's origin, the path to ask it for, and the Basic authorization its
        user:password@ asks for (looked up once per URL)."""
        target = self.targets.get(url)
        if target is None:
            parts = urlsplit(url)
            origin = f"{parts.scheme}://{parts.hostname}:{parts.port}"
            auth = None
            if parts.username is not None:
                pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
                auth = "Basic " + base64.b64encode(pair).decode()
            with self.lock:
                pool = self.pools.get(origin)
                if pool is None:
                    kind = urllib3.HTTPSConnectionPool if parts.scheme == "https" else urllib3.HTTPConnectionPool
                    pool = self.pools[origin] = kind(
                        parts.hostname, parts.port, maxsize=self.pool_size, block=False, retries=False,
                        timeout=self.timeout, headers={"User-Agent": USER_AGENT})
            target = (pool, parts.path + (f"?{parts.query}" if parts.query else ""), auth)
            if len(self.targets) < 1024:  # a provider's few URLs; list pages vary and are not kept
                self.targets[url] = target
        return target

    def _send_urllib3(self, request: HttpRequest) -> HttpResponse:
        pool, path, auth = self._target(request.url)
        headers = request.headers if "User-Agent" in request.headers else {"User-Agent": USER_AGENT, **request.headers}
        if auth and "Authorization" not in headers:
            headers = {**headers, "Authorization": auth}
        try:
            response = pool.urlopen(request.method, path, body=request.body or None, headers=headers,
                                    redirect=False, preload_content=True, decode_content=False, retries=False,
                                    assert_same_host=False)
        except (u3.ConnectTimeoutError, u3.NewConnectionError, u3.NameResolutionError) as exc:
            raise NotSent(_describe(exc)) from None
        except u3.MaxRetryError as exc:  # retries=False wraps the cause on some paths
            reason = exc.reason
            if isinstance(reason, (u3.ConnectTimeoutError, u3.NewConnectionError)):
                raise NotSent(_describe(reason)) from None
            raise MaybeSent(_describe(reason or exc)) from None
        except (u3.ReadTimeoutError, u3.ProtocolError, u3.HTTPError, OSError) as exc:
            raise MaybeSent(_describe(exc)) from None
        return HttpResponse(response.status, response.headers, response.data)

    def _send_requests(self, request: HttpRequest, headers: dict) -> HttpResponse:
        try:
            response = self._session().request(
                request.method, request.url, data=request.body or None, headers=headers,
                timeout=(self.connect_timeout, self.read_timeout), allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout as exc:
            raise NotSent(_describe(exc)) from None
        except requests.exceptions.ConnectionError as exc:
            cause = exc.args[0] if exc.args else None
            inner = getattr(cause, "reason", cause)
            if isinstance(inner, (u3.NewConnectionError, u3.ConnectTimeoutError, u3.NameResolutionError)):
                raise NotSent(_describe(inner)) from None
            raise MaybeSent(_describe(exc)) from None
        except requests.exceptions.RequestException as exc:
            raise MaybeSent(_describe(exc)) from None
        return HttpResponse(response.status_code, response.headers, response.content)

    def close(self) -> None:
        if self.client == "urllib3":
            for pool in self.pools.values():
                pool.close()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    # Never echo a URL's query string or credentials: keep the exception's class and the tail.
    return f"{type(exc).__name__}: {text.split('(Caused by')[-1].strip(' ()')[:200]}"
