"""A small etcd v3 client over etcd's JSON gateway (``/v3/...``), standard library only.

Owns the client: endpoints, failover, time bounds, authentication and TLS.  The gateway's wire
format (base64 keys, int64 strings, the compare/op builders, the answer decoders) is
``cni_ipam.cluster.etcdwire``; its public names are re-exported here.

Imported lazily on the ADD path when a pool is configured, so it imports nothing but ``json``,
``time`` and ``etcdwire`` (``binascii``) at module level; the HTTP transport (``cni_ipam.httpio``:
``socket``) comes with the first request, ``ssl`` with the constructor when an endpoint is https.
Written against etcd 3.4 (Debian's ``etcd-server``); the ``/v3`` paths are the same in 3.5.

Usage::

    from cni_ipam.cluster.etcd import EtcdClient, EtcdError, EtcdUnavailable, cmp_create, op_put
    c = EtcdClient(["https://10.0.0.1:2379", "https://10.0.0.2:2379"], ca_file="/etc/etcd/ca.pem",
                   cert_file="/etc/cni-ipam/client.pem", key_file="/etc/cni-ipam/client-key.pem",
                   username=None, password=None, timeout=2.0)
    ok, responses, rev = c.txn([cmp_create(b"/k", "=", 0)], [op_put(b"/k", b"v")], [op_get(b"/k")])

Keys and values are ``bytes`` everywhere; revisions and counts are ``int``.

The API
-------
``EtcdClient(endpoints, ca_file=None, cert_file=None, key_file=None, username=None, password=None,
timeout=2.0, total_timeout=None)``
    ``endpoints``: a list of ``http://host:port`` / ``https://host:port`` URLs (or one string with
    commas); ``[v6addr]:port`` works.  ``ca_file`` verifies the servers of https endpoints (else the
    system CAs); ``cert_file``/``key_file`` are the client certificate and key (PEM; an encrypted
    key is refused, nothing ever prompts).  ``username``/``password``: etcd authentication (below).
    The constructor checks everything it can without the network and raises ``EtcdConfigError``
    (an ``EtcdError``) naming the culprit: a bad endpoint list, and, when an endpoint is https, a
    CA, certificate or key file that is missing, unreadable, not a regular file or not loadable.
    Proxy variables (``https_proxy``...) are ignored.  One client per thread: it keeps one
    keep-alive connection to the endpoint in use.

Time bounds
-----------
``timeout`` bounds ONE attempt against one endpoint as a whole, by one absolute deadline: name
resolution (in a helper thread; IP literals are not looked up), TCP connect, TLS handshake, sending
the request, the status line, the headers and the body (at most ``MAX_RESPONSE`` bytes) together.
A member that accepts and never answers, or drips its answer a byte at a time, costs at most
``timeout``.  ``total_timeout`` bounds the whole call over every endpoint and the
re-authentication (default: ``timeout`` x the number of endpoints); an endpoint reached when it has
run out is "not tried (out of time)".

``c.get(key) -> (value, mod_revision) | None``
``c.range_prefix(prefix, keys_only=False) -> [(key, value, mod_revision, create_revision), ...]``
    sorted by key; fetched in pages of ``PAGE_SIZE`` keys, all pages read at the revision of the
    first one (one consistent snapshot); ``keys_only`` gives ``b""`` values.
``c.range_between(start, end, keys_only=False, revision=0) -> (kvs, revision)``
    the same over [start, end), at ``revision`` (0: the first page's), which it returns: later
    reads at that revision see the same snapshot.
``c.put(key, value) -> revision`` (the header revision of the write)
``c.delete(key) -> deleted count`` (0 or 1)
``c.txn(compares, success, failure) -> (succeeded, responses, header_revision)``
    ``compares`` from ``cmp_create(key, op, rev)``, ``cmp_mod(key, op, rev)``,
    ``cmp_value(key, op, value)``, ``cmp_version(key, op, version)`` with ``op`` one of
    ``= != < >``; all but ``cmp_value`` take ``range_end=`` to compare every key of a range
    (``cmp_version(start, "=", 0, range_end=end)``: no key in the range).  ``success``/``failure``
    lists from ``op_put(key, value)``, ``op_delete(key, prefix=False)``, ``op_get(key, prefix=False)``,
    ``op_range(key, range_end=None, revision=0, count_only=False, keys_only=False)``.
    ``responses`` are the responses of the branch that ran, in order, decoded:
    ``{"type": "range", "kvs": [(key, value, mod_revision, create_revision), ...], "count": n, "more": bool}``,
    ``{"type": "put", "revision": r}``, ``{"type": "delete", "deleted": n, "revision": r}``.
    etcd limits a transaction to 128 operations (``--max-txn-ops``) and a key to one write per txn.
``prefix_end(prefix) -> bytes``: the ``range_end`` that selects every key starting with ``prefix``.
``c.last_header``: ``(cluster_id, revision)`` of the last answer (``(0, 0)`` before any).
``c.endpoint``: the URL that answered last; ``c.round_trips``: HTTP requests sent (for benchmarks).

Errors
------
``EtcdUnavailable``: no endpoint answered in time: connection refused/reset, name not resolved,
    timeout, HTTP 5xx or 429, or etcd saying it cannot serve now (``no leader``, ``not leader``,
    ``leader changed``, ``request timed out``, ``too many requests``...).  Callers map it to CNI
    code 11.  The message lists what each endpoint did.
``EtcdError``: etcd (or its TLS layer) refused: authentication failed, permission denied, bad
    request, a certificate not accepted or not trusted; or no endpoint was etcd (an answer that is
    not HTTP, not JSON, or JSON that is not etcd's: a 200 without etcd's ``header``, an error
    without its gRPC ``code``).  The message names the endpoint and etcd's error text.
``EtcdConfigError`` (an ``EtcdError``, from the constructor only): see above.
No message ever contains the password or the auth token, and none starts with ``etcd:``: callers
add their own prefix.

Failover
--------
Every call starts at the endpoint that answered last; when an attempt fails (any reason above but
a refusal by etcd itself) it tries the next endpoint, round the list once, within
``total_timeout``.  When every endpoint failed, a sure refusal anywhere (TLS, not etcd) makes the
error ``EtcdError``, else ``EtcdUnavailable``.  A request that timed out after it was sent may still
have been applied by that member: a retried ``put`` writes the same value again; a retried
create-if-absent ``txn`` then fails its compare, so callers that claim keys check whether the key
already holds their own value.

Authentication
--------------
With ``username``, the first request first calls ``/v3/auth/authenticate`` and sends the token it
gets in the ``Authorization`` header (the gateway's spelling of the gRPC ``token`` metadata).  On
``invalid auth token`` (simple tokens expire after ``--auth-token-ttl`` of idleness, and a restarted
member forgets them) it authenticates again, once per call, and repeats the request.
"""

from __future__ import annotations

import json
import time

from cni_ipam.cluster.etcdwire import (
    _DECODE,
    _NO_TEXT,
    _b64,
    _decode_token,
    _error_text,
    _header,
    cmp_create,
    cmp_mod,
    cmp_value,
    cmp_version,
    op_delete,
    op_get,
    op_put,
    op_range,
    prefix_end,
)

# the txn builders live in etcdwire; callers import them from here with the client
__all__ = ["EtcdClient", "EtcdError", "EtcdUnavailable", "EtcdConfigError", "PAGE_SIZE", "MAX_RESPONSE",
           "cmp_create", "cmp_mod", "cmp_value", "cmp_version", "op_delete", "op_get", "op_put", "op_range",
           "prefix_end"]

PAGE_SIZE = 1000  # keys per range request in range_prefix
MAX_RESPONSE = 64 << 20  # bytes of one answer
USER_AGENT = "cni-ipam/etcd"

# etcd's words for "this member cannot serve the request now; another one may"
_UNAVAILABLE_WORDS = ("not leader", "no leader", "leader changed", "timed out", "unavailable", "too many requests",
                      "not capable", "server stopped", "context canceled", "deadline exceeded", "etcdserver: stopped")


class EtcdError(Exception):
    """etcd answered with an error (auth refused, permission denied, bad request, TLS refused)."""


class EtcdUnavailable(Exception):
    """No etcd endpoint answered in time (callers map it to CNI code 11)."""


class EtcdConfigError(EtcdError):
    """The client's own configuration is wrong: a bad endpoint list, a CA, certificate or key file
    that is missing, unreadable or not PEM.  Raised by the constructor, before any request; callers
    map it to "invalid configuration", never to "try again later"."""


# How one attempt failed (see _send): the member is unavailable, it refused us for sure (a TLS alert,
# an untrusted server certificate, not etcd at all), or it closed a fresh TLS connection right after
# the handshake (TLS 1.3 servers reject a client certificate that way, as do members shutting down).
UNAVAILABLE, REFUSED, CLOSED_AFTER_HANDSHAKE = "unavailable", "refused", "closed after handshake"


class _Retry(Exception):
    """One attempt failed in a way another endpoint may not: try the next one."""

    def __init__(self, text: str, kind: str = UNAVAILABLE) -> None:
        super().__init__(text)
        self.kind = kind


# ---------------------------------------------------------------------------------- endpoints
class _Endpoint:
    __slots__ = ("url", "tls", "host", "port")

    def __init__(self, url: str) -> None:
        text = url.strip().rstrip("/")
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "http", text
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise EtcdConfigError(f"etcd endpoint {url!r}: the scheme must be http:// or https://")
        if "/" in rest or "@" in rest or "?" in rest:
            raise EtcdConfigError(f"etcd endpoint {url!r}: give scheme://host:port only (no path, no user)")
        if rest.startswith("["):
            host, sep, port_text = rest[1:].partition("]")
            port_text = port_text[1:] if port_text.startswith(":") else port_text
            if not sep or not host:
                raise EtcdConfigError(f"etcd endpoint {url!r}: bad IPv6 address")
        else:
            host, _, port_text = rest.partition(":")
        try:
            port = int(port_text) if port_text else 2379
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise EtcdConfigError(f"etcd endpoint {url!r}: bad port {port_text!r}") from None
        if not host:
            raise EtcdConfigError(f"etcd endpoint {url!r}: no host")
        self.tls = scheme == "https"
        self.host = host
        self.port = port
        self.url = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"


def _endpoints(endpoints) -> list:
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    try:
        out = [_Endpoint(str(e)) for e in endpoints if str(e).strip()]
    except TypeError:
        raise EtcdConfigError("etcd endpoints must be a list of URLs") from None
    if not out:
        raise EtcdConfigError("no etcd endpoint given")
    return out


# ---------------------------------------------------------------------------------- the client
class EtcdClient:
    def __init__(self, endpoints, ca_file=None, cert_file=None, key_file=None, username=None, password=None,
                 timeout: float = 2.0, total_timeout=None) -> None:
        self._endpoints = _endpoints(endpoints)
        if bool(cert_file) != bool(key_file):
            raise EtcdConfigError("etcd client certificate and key must be given together")
        if username is not None and password is None:
            raise EtcdConfigError(f"etcd user {username!r} has no password")
        if not timeout or timeout <= 0:
            raise EtcdConfigError("etcd timeout must be positive")
        self.ca_file = ca_file
        self.cert_file = cert_file
        self.key_file = key_file
        self.username = username
        self._password = password
        self.timeout = float(timeout)
        self.total_timeout = float(total_timeout) if total_timeout else self.timeout * len(self._endpoints)
        self._current = 0
        self._conn: tuple | None = None  # (endpoint index, httpio.Connection) kept alive between calls
        # TLS files are read now: a missing or bad file is a configuration error, not an outage
        self._ssl_ctx = self._load_tls() if any(e.tls for e in self._endpoints) else None
        self._token = None
        self.round_trips = 0
        # (cluster_id, revision) of the last answer that carried a header: a restored etcd shows a new
        # cluster id or a revision below one seen before
        self.last_header = (0, 0)

    def __repr__(self) -> str:  # never the password or the token
        return f"EtcdClient({[e.url for e in self._endpoints]!r}, user={self.username!r})"

    @property
    def endpoint(self) -> str:
        return self._endpoints[self._current].url

    @property
    def endpoints(self) -> list:
        return [e.url for e in self._endpoints]

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn[1].close()
            except Exception:
                pass
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ key-value
    def get(self, key: bytes):
        _, kvs, _ = self._call("/v3/kv/range", {"key": _b64(key)})
        return (kvs[0][1], kvs[0][2]) if kvs else None

    def range_prefix(self, prefix: bytes, keys_only: bool = False) -> list:
        for attempt in (0, 1):
            try:
                return self.range_between(prefix, prefix_end(prefix), keys_only)[0]
            except EtcdError as exc:  # the pinned revision was compacted between two pages: start again
                if attempt or "compacted" not in str(exc):
                    raise
        return []  # pragma: no cover

    def range_between(self, start: bytes, end: bytes, keys_only: bool = False, revision: int = 0) -> tuple:
        """Every key of [start, end) in pages of ``PAGE_SIZE``, all read at ``revision`` (0: the
        revision of the first page): (kvs, that revision).  A compacted ``revision`` raises
        ``EtcdError`` (its text says "compacted")."""
        end_b64 = _b64(end)
        out: list = []
        while True:
            req: dict = {"key": _b64(start), "range_end": end_b64, "limit": str(PAGE_SIZE)}
            if keys_only:
                req["keys_only"] = True
            if revision:
                req["revision"] = str(revision)
            head_revision, page, more = self._call("/v3/kv/range", req)
            if not revision:
                revision = head_revision
            out += page
            if not more or not page:
                return out, revision
            start = page[-1][0] + b"\0"

    def put(self, key: bytes, value: bytes) -> int:
        return self._call("/v3/kv/put", op_put(key, value)["request_put"])

    def delete(self, key: bytes) -> int:
        return self._call("/v3/kv/deleterange", {"key": _b64(key)})

    def txn(self, compares, success, failure=()):
        body = {"compare": list(compares), "success": list(success), "failure": list(failure)}
        return self._call("/v3/kv/txn", body)

    # ------------------------------------------------------------------ transport
    def _call(self, path: str, body: dict):
        """POST ``body`` to ``path``: the first 200 answer that is etcd's, decoded by ``_DECODE[path]``."""
        decoder = _DECODE[path]

        def decode(doc: dict):
            return decoder(doc, body)

        deadline = time.monotonic() + self.total_timeout
        reauthed = False
        if self.username is not None and self._token is None:
            self._authenticate(deadline)
        payload = json.dumps(body, separators=(",", ":")).encode()
        while True:
            headers = {"Authorization": self._token} if self._token else None
            status, result, index = self._send(path, payload, headers, deadline, decode)
            if status == 200:
                return result
            text = _error_text(result)
            if (self.username is not None and not reauthed and "invalid auth token" in text
                    and time.monotonic() < deadline):
                reauthed = True
                self._token = None
                self._authenticate(deadline)
                continue
            where = self._endpoints[index].url
            raise EtcdError(f"etcd {where} refused {path}: {text} (HTTP {status})")

    def _authenticate(self, deadline: float) -> None:
        payload = json.dumps({"name": self.username, "password": self._password}).encode()
        status, result, index = self._send("/v3/auth/authenticate", payload, None, deadline,
                                           lambda doc: _decode_token(doc, {}))
        if status != 200:
            raise EtcdError(f"etcd {self._endpoints[index].url}: authentication as user {self.username!r} failed: "
                            f"{_error_text(result)} (HTTP {status})")
        self._token = result

    def _send(self, path: str, payload: bytes, headers, deadline: float, decode):
        """Try the endpoints in turn, from the one that worked last: (status, result, index) of the
        first that answers with a status that is not "try elsewhere"; for 200, ``result`` is
        ``decode(doc)``, else the error document."""
        count = len(self._endpoints)
        failures = []
        kinds = set()
        for step in range(count):
            index = (self._current + step) % count
            ep = self._endpoints[index]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                failures.append(f"{ep.url}: not tried (out of time)")
                kinds.add(UNAVAILABLE)
                continue
            try:
                status, doc = self._attempt(index, path, payload, headers, min(self.timeout, remaining))
                if status == 200:
                    try:
                        head = _header(doc) if path != "/v3/auth/authenticate" else None
                        result = decode(doc)
                    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError) as exc:
                        self._drop()
                        raise _Retry(f"answered HTTP 200 with JSON that is not etcd's answer to {path} ({exc}; "
                                     "is this an etcd client URL?)", REFUSED) from None
                    if head is not None:
                        self.last_header = head
                    self._current = index
                    return status, result, index
            except _Retry as exc:
                failures.append(f"{ep.url}: {exc}")
                kinds.add(exc.kind)
                continue
            text = _error_text(doc)
            if status >= 500 or status == 429 or any(w in text for w in _UNAVAILABLE_WORDS):
                failures.append(f"{ep.url}: {text if text != _NO_TEXT else 'HTTP ' + str(status)} (HTTP {status})")
                kinds.add(UNAVAILABLE)
                self._drop()
                continue
            if not isinstance(doc.get("code"), int):  # etcd's errors carry their gRPC code
                failures.append(f"{ep.url}: answered HTTP {status} with JSON that is not an etcd error "
                                f"({text}; is this an etcd client URL?)")
                kinds.add(REFUSED)
                self._drop()
                continue
            self._current = index
            return status, doc, index
        summary = "; ".join(failures)
        # A sure refusal anywhere is a configuration problem; so is every endpoint closing the
        # connection after the handshake; anything else may pass: try again later.
        if REFUSED in kinds or kinds == {CLOSED_AFTER_HANDSHAKE}:
            raise EtcdError(f"no etcd endpoint accepted {path}: {summary}")
        raise EtcdUnavailable(f"no etcd endpoint answered {path} within {self.total_timeout:g}s: {summary}")

    def _drop(self) -> None:
        self.close()

    def _attempt(self, index: int, path: str, payload: bytes, headers, limit: float):
        """One request to one endpoint: name resolution, connect, TLS, request and the whole answer
        within ``limit`` seconds (one deadline for every step, see cni_ipam.httpio)."""
        from cni_ipam import httpio

        end = time.monotonic() + limit
        ep = self._endpoints[index]
        if self._conn is not None and self._conn[0] != index:
            self._drop()
        if self._conn is None:
            self._conn = (index, httpio.Connection(ep.host, ep.port, self._ssl_ctx if ep.tls else None))
        conn = self._conn[1]
        hdrs = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
        if headers:
            hdrs.update(headers)
        self.round_trips += 1
        try:
            resp = conn.request("POST", path, payload, hdrs, end, MAX_RESPONSE)
        except httpio.DeadlineExceeded as exc:
            self._drop()
            raise _Retry(str(exc)) from None
        except httpio.Closed as exc:
            self._drop()
            if ep.tls and exc.fresh and exc.stage == "answer":
                raise _Retry("closed the TLS connection right after the handshake: it does not accept the client "
                             "certificate (or none was given), or it is shutting down",
                             CLOSED_AFTER_HANDSHAKE) from None
            hint = "" if ep.tls else " (if this endpoint serves TLS, write https://)"
            raise _Retry(f"{exc}{hint}") from None
        except httpio.NotHttp as exc:
            self._drop()
            raise _Retry(f"{exc} (is this an etcd client URL?)", REFUSED) from None
        except OSError as exc:
            self._drop()
            if ep.tls:
                import ssl

                if isinstance(exc, ssl.SSLCertVerificationError):
                    raise _Retry(f"TLS verification of the server certificate failed: {exc.verify_message or exc} "
                                 "(check the CA file and that the certificate names this host)", REFUSED) from None
                if isinstance(exc, ssl.SSLError):
                    raise _Retry(f"TLS refused: {exc.reason or exc} (does etcd accept the client certificate? "
                                 "does this endpoint serve TLS?)", REFUSED) from None
            raise _Retry(_os_text(exc)) from None
        status, body = resp.status, resp.body
        try:
            doc = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            self._drop()
            text = "".join(ch if ch.isprintable() else " " for ch in body[:200].decode("utf-8", "replace")).strip()
            if status >= 500:  # a proxy's error page, a member starting up: another may answer
                raise _Retry(f"HTTP {status}: {text or 'no body'}") from None
            raise _Retry(f"answered HTTP {status} with something that is not JSON: {text!r} "
                         "(is this an etcd client URL?)", REFUSED) from None
        if not isinstance(doc, dict):
            self._drop()
            raise _Retry(f"answered HTTP {status} with JSON that is not an object "
                         "(is this an etcd client URL?)", REFUSED)
        return status, doc

    def _load_tls(self):
        """The verifying TLS context of the https endpoints, every file checked and loaded now.
        Errors name the file (``EtcdConfigError``)."""
        import ssl

        for what, path in (("CA file", self.ca_file), ("client certificate", self.cert_file),
                           ("client key", self.key_file)):
            if path:
                _check_file(what, path)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
        try:
            if self.ca_file:
                ctx.load_verify_locations(cafile=self.ca_file)
            else:
                ctx.load_default_certs()
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise EtcdConfigError(f"cannot load the etcd CA file {self.ca_file}: {_short(exc)}") from None
        if self.ca_file and not ctx.get_ca_certs():
            raise EtcdConfigError(f"the etcd CA file {self.ca_file} holds no CA certificate")

        def no_password():  # never let OpenSSL prompt on a terminal for an encrypted key
            raise ValueError("the key is encrypted; cni-ipam cannot prompt for its password")

        if self.cert_file:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file, password=no_password)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise EtcdConfigError(f"cannot load the etcd client certificate {self.cert_file} with the key "
                                      f"{self.key_file}: {_short(exc)}") from None
        return ctx


def _check_file(what: str, path: str) -> None:
    """A TLS file must be a readable regular file: opened non-blocking (a FIFO is refused, never
    waited on, as ssl would), the error naming the file and the key it came from."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise EtcdConfigError(f"cannot read the etcd {what} {path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise EtcdConfigError(f"the etcd {what} {path} is not a regular file")
    finally:
        os.close(fd)


def _os_text(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _short(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc)
