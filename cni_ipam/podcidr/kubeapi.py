"""A minimal Kubernetes API client for usePodCidr: kubeconfig or in-cluster credentials, one GET.

Imported only when ``podcidr`` must really ask the API server (no fresh cache), so TLS, HTTP and
PyYAML cost nothing on a normal ADD.  What it supports:

- kubeconfig (read with PyYAML): ``current-context`` (or the only context), cluster ``server``
  (``https://`` only, a path prefix is kept), ``certificate-authority`` / ``certificate-authority-data``
  (else the system CAs), ``tls-server-name``; user ``token``, ``tokenFile``, ``client-certificate`` /
  ``client-key`` and their ``-data`` forms.  Relative paths are relative to the kubeconfig's directory,
  as kubectl resolves them.  ``insecure-skip-tls-verify``, ``exec``, ``auth-provider`` and basic auth
  are refused with a message saying so.
- in-cluster: ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` and the service account's
  ``token`` and ``ca.crt``.

Hostile or broken answers are bounded (docs/security.md): one deadline (``podCidr.timeout``) covers
name resolution, connect, TLS handshake, request, headers and body together; the body is capped at
8 MiB and its JSON nesting depth bounded; no redirect is followed.  A kubeconfig with YAML aliases is
refused (alias bombs), a CA that does not decode is an error (never the system CAs instead), and a
token must be one line of token characters.  No error message quotes a token, a key or the content
of a credential file, and every file is read non-blocking, regular files only, at most 1 MiB.

Inline client certificates and keys never touch the disk: they are loaded through an anonymous
memory file (``memfd``); only where that is impossible are they written, mode 0600, to a temporary
file inside ``<dataDir>/.cni-ipam-podcidr/`` and removed at once.
"""

from __future__ import annotations

import base64
import json
import os
import ssl

from cni_ipam.errors import PODCIDR_UNAVAILABLE, TRY_AGAIN_LATER, CniError

MAX_RESPONSE = 8 << 20
MAX_FILE = 1 << 20  # kubeconfig, token, CA, client certificate and key files
USER_AGENT = "cni-ipam/usePodCidr"
# RFC 6750 b64token: what an Authorization: Bearer value may hold (JWTs and bootstrap tokens fit)
_TOKEN_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")


class Target:
    """Where and how to ask: server URL parts, TLS context, Authorization header, and a description
    of the credentials (``kubeconfig /path (context c, user u)`` or ``in-cluster service account``)."""

    def __init__(
        self,
        host: str,
        port: int,
        prefix: str,
        context: ssl.SSLContext,
        server_name: str,
        auth: str | None,
        origin: str,
        server: str,
    ) -> None:
        self.host = host
        self.port = port
        self.prefix = prefix
        self.context = context
        self.server_name = server_name
        self.auth = auth
        self.origin = origin
        self.server = server


def fail(msg: str, details: str, code: int = PODCIDR_UNAVAILABLE) -> CniError:
    return CniError(code, msg, details)


class ApiAnswer(CniError):
    """The API server answered, but not 200: the HTTP ``status`` and, when the body is a Kubernetes
    ``Status`` object, its ``reason`` ("NotFound", "Forbidden", ...; "" otherwise) and ``kind``
    (``details.kind``, e.g. "nodes").  Callers decide on these, never on the message text."""

    def __init__(self, code: int, msg: str, details: str, status: int, body: bytes) -> None:
        super().__init__(code, msg, details)
        self.status = status
        self.reason, self.kind = _status_fields(body)

    def node_not_found(self) -> bool:
        """A clear "no such Node": 404 with a Status ``NotFound`` (for ``nodes`` when it says).  A
        404 without that Status (a proxy's page, a wrong path prefix) is not a clear answer."""
        return self.status == 404 and self.reason == "NotFound" and self.kind in ("", "nodes")


def node_pod_cidrs(target: tuple[str, str], node: str, timeout: float, scratch_dir: str) -> tuple[list, str]:
    """``spec.podCIDRs`` (else ``spec.podCIDR``) of ``node`` as networks, and the origin phrase."""
    kind, path = target
    tgt = from_kubeconfig(path, scratch_dir) if kind == "kubeconfig" else in_cluster(path)
    obj = get_node(tgt, node, timeout)
    return pod_cidrs(obj, node, tgt), f"node {node} at {tgt.server} ({tgt.origin})"


def pod_cidrs(obj: object, node: str, tgt: Target | None = None) -> list:
    """The node's pod CIDRs, refused (104 naming the node) unless each is one sane network per
    family, without host bits (see ``podcidr.cidrs.refusal``): a hostile node object hands out nothing."""
    from cni_ipam.podcidr.cidrs import parse_cidr_list

    spec = obj.get("spec") if isinstance(obj, dict) else None
    if not isinstance(spec, dict):
        spec = {}
    values = spec.get("podCIDRs")
    if not isinstance(values, list) or not values:
        single = spec.get("podCIDR")
        values = [single] if isinstance(single, str) and single else []
    if not values:
        return []
    where = f" at {tgt.server}" if tgt else ""
    if len(values) > 2:
        raise fail(
            f"usePodCidr: node {node}{where} has {len(values)} pod CIDRs (at most one per family)", f"node {node}"
        )
    return parse_cidr_list(f"pod CIDR of node {node}{where}", values, code=PODCIDR_UNAVAILABLE, details=f"node {node}")


# ---------------------------------------------------------------------------------- credentials
def in_cluster(sa_dir: str) -> Target:
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    port_text = os.environ.get("KUBERNETES_SERVICE_PORT", "443").strip() or "443"
    origin = f"in-cluster service account {sa_dir}"
    if not host:
        raise fail(f"usePodCidr: KUBERNETES_SERVICE_HOST is not set ({origin})", "KUBERNETES_SERVICE_HOST")
    try:
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise fail(
            f"usePodCidr: KUBERNETES_SERVICE_PORT={port_text!r} is not a port", "KUBERNETES_SERVICE_PORT"
        ) from None
    token_path = os.path.join(sa_dir, "token")
    token = _token(_read(token_path, origin, "token"), f"the service account token {token_path}")
    ca = os.path.join(sa_dir, "ca.crt")
    ctx = _context(origin, cafile=ca if os.path.exists(ca) else None)
    server = f"https://{'[' + host + ']' if ':' in host else host}:{port}"
    return Target(host, port, "", ctx, host, f"Bearer {token}", origin, server)


def from_kubeconfig(path: str, scratch_dir: str) -> Target:
    try:
        import yaml  # type: ignore[import-untyped]  # PyYAML: only here, only when the API is really asked
    except ImportError:
        raise fail(
            f"usePodCidr: reading the kubeconfig {path} needs PyYAML, a dependency of cni-ipam "
            "(pip install PyYAML, or apt-get install python3-yaml)",
            path,
        ) from None
    raw = _read(path, "", "kubeconfig")
    try:
        doc = yaml.load(raw, Loader=_loader(yaml))
    except yaml.YAMLError as exc:
        # the line only: a YAML message can quote the file, and a kubeconfig holds secrets
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        if getattr(exc, "problem", None) == ALIAS_REFUSED:
            raise fail(f"usePodCidr: kubeconfig {path}: {ALIAS_REFUSED}{where}", path) from None
        raise fail(f"usePodCidr: kubeconfig {path} is not valid YAML{where}", path) from None
    except (RecursionError, MemoryError):
        raise fail(f"usePodCidr: kubeconfig {path} is not valid YAML (nested too deeply)", path) from None
    if not isinstance(doc, dict):
        raise fail(f"usePodCidr: kubeconfig {path} is not a kubeconfig (no mapping at the top)", path)
    base = os.path.dirname(os.path.abspath(path))

    def bad(what: str) -> CniError:
        return fail(f"usePodCidr: kubeconfig {path}: {what}", path)

    def named(section: str, name: str | None) -> dict:
        items = doc.get(section) or []
        if not isinstance(items, list):
            raise bad(f"{section} must be a list")
        for item in items:
            if isinstance(item, dict) and item.get("name") == name and isinstance(item.get(section[:-1]), dict):
                return item[section[:-1]]
        raise bad(f"no {section[:-1]} named {name!r}")

    ctx_name = doc.get("current-context")
    if not ctx_name:
        contexts = doc.get("contexts") or []
        if isinstance(contexts, list) and len(contexts) == 1 and isinstance(contexts[0], dict):
            ctx_name = contexts[0].get("name")
        else:
            raise bad("current-context is not set")
    context = named("contexts", ctx_name)
    cluster = named("clusters", context.get("cluster"))
    user = named("users", context.get("user")) if context.get("user") else {}
    origin = f"kubeconfig {path} (context {ctx_name}, user {context.get('user') or 'none'})"

    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise bad(f"cluster {context.get('cluster')!r} has no server")
    from urllib.parse import urlsplit

    try:
        url = urlsplit(server.strip())
        port = url.port or 443
        host = url.hostname
    except ValueError:
        raise bad(f"the server of cluster {context.get('cluster')!r} is not a URL") from None
    if url.username is not None or url.password is not None:
        raise bad(
            f"the server URL of cluster {context.get('cluster')!r} holds credentials (user:password@); "
            "put them in the user"
        )
    if url.scheme != "https" or not host:
        raise bad(
            f"the server of cluster {context.get('cluster')!r} must be an https:// URL (plain HTTP is not supported)"
        )
    if cluster.get("insecure-skip-tls-verify"):
        raise bad("insecure-skip-tls-verify is refused: give certificate-authority or certificate-authority-data")
    for unsupported in ("exec", "auth-provider", "username", "password"):
        if user.get(unsupported):
            raise bad(
                f"user {context.get('user')!r}: {unsupported} is not supported; "
                "use a token, tokenFile or client certificate"
            )

    cadata = _b64(cluster, "certificate-authority-data", bad)
    cafile = _path(cluster, "certificate-authority", base)
    if cadata is None and cafile:
        cadata = _read(cafile, origin, "certificate-authority")
        cafile_shown = f"certificate-authority {cafile}"
    else:
        cafile_shown = "certificate-authority-data"
    ctx = _context(origin, cadata=cadata, what=cafile_shown)
    cert_data = _b64(user, "client-certificate-data", bad)
    key_data = _b64(user, "client-key-data", bad)
    cert_file = _path(user, "client-certificate", base)
    key_file = _path(user, "client-key", base)
    if cert_data or cert_file or key_data or key_file:
        if not (cert_data or cert_file) or not (key_data or key_file):
            raise bad(
                f"user {context.get('user')!r} has a client certificate without a key or a key without a certificate"
            )
        _load_client_cert(ctx, origin, cert_file, key_file, cert_data, key_data, scratch_dir)

    auth = None
    user_name = context.get("user")
    token = user.get("token")
    if isinstance(token, str) and token.strip():
        what = f"the token of user {user_name!r} in kubeconfig {path}"
        auth = f"Bearer {_token(token.encode('utf-8', 'replace'), what)}"
    else:
        token_file = _path(user, "tokenFile", base)
        if token_file:
            auth = f"Bearer {_token(_read(token_file, origin, 'tokenFile'), f'tokenFile {token_file} ({origin})')}"
    sni = cluster.get("tls-server-name") or host
    prefix = url.path.rstrip("/")
    shown = f"https://{'[' + host + ']' if ':' in host else host}:{port}{prefix}"
    return Target(host, port, prefix, ctx, str(sni), auth, origin, shown)


ALIAS_REFUSED = "YAML aliases are not allowed in a kubeconfig (an alias can expand a small file to gigabytes)"


def _loader(yaml):
    """PyYAML's safe loader without aliases: no kubeconfig needs them, and a 558-byte alias bomb
    expands to 1.5 GB (client-go bounds the expansion; refusing is simpler and as safe)."""

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(None, None, ALIAS_REFUSED, self.peek_event().start_mark)
            return super().compose_node(parent, index)

    return NoAliasLoader


def _token(raw: bytes, what: str) -> str:
    """One bearer token: surrounding whitespace dropped, then one line of RFC 6750 token characters.
    The error names where the token came from and never shows any of it."""
    token = raw.strip()
    if not token:
        raise fail(f"usePodCidr: {what} is empty", what)
    if any(c not in _TOKEN_CHARS for c in token):
        lines = len(token.splitlines())
        why = f"holds {lines} lines" if lines > 1 else "holds characters a bearer token cannot have"
        raise fail(f"usePodCidr: {what} {why}; it must be one token on one line", what)
    return token.decode("ascii")


def _b64(section: dict, key: str, bad) -> bytes | None:
    """Strict base64 (whitespace allowed between groups); junk or an empty result is an error,
    never "not set" (which would quietly mean the system CAs, or no client certificate)."""
    value = section.get(key)
    if value is None or value == "":
        return None
    text = "".join(str(value).split())
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:
        data = b""
    if not data:
        raise bad(f"{key} does not decode (it must be base64 of PEM data)")
    return data


def _path(section: dict, key: str, base: str) -> str | None:
    value = section.get(key)
    if not value:
        return None
    return os.path.join(base, str(value))  # an absolute value stays as it is


def _read(path: str, origin: str, what: str) -> bytes:
    """A credential file: a regular file (a FIFO or a device is refused, never waited on), at most
    1 MiB; errors name the file, never its content."""
    from cni_ipam.store import fs as safefs

    where = f" ({origin})" if origin else ""
    try:
        return safefs.read_path(path, MAX_FILE)
    except OSError as exc:
        raise fail(f"usePodCidr: cannot read {what} {path}{where}: {exc.strerror}", path) from None
    except safefs.NotRegular:
        raise fail(f"usePodCidr: {what} {path}{where} is not a regular file", path) from None
    except safefs.TooLarge:
        raise fail(f"usePodCidr: {what} {path}{where} is larger than {MAX_FILE} bytes", path) from None


def _context(origin: str, cafile: str | None = None, cadata: bytes | None = None, what: str = "") -> ssl.SSLContext:
    """A verifying client context trusting ``cadata`` (PEM), else ``cafile``, else the system CAs.
    A CA that was given but holds no certificate is an error, never a fall-back to the system CAs."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    what = what or (
        "certificate-authority-data" if cadata else f"certificate-authority {cafile}" if cafile else "system CAs"
    )
    try:
        if cadata is not None:
            ctx.load_verify_locations(cadata=cadata.decode("ascii"))
        elif cafile:
            ctx.load_verify_locations(cadata=_read(cafile, origin, "certificate-authority").decode("ascii"))
        else:
            ctx.load_default_certs()
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or (
            "not PEM text" if isinstance(exc, UnicodeDecodeError) else type(exc).__name__
        )
        raise fail(f"usePodCidr: cannot load the {what} of {origin}: {reason}", origin) from None
    if (cadata is not None or cafile) and not ctx.get_ca_certs():
        raise fail(f"usePodCidr: the {what} of {origin} holds no CA certificate", origin)
    return ctx


def _load_client_cert(ctx, origin, cert_file, key_file, cert_data, key_data, scratch_dir) -> None:
    def no_password():  # never let OpenSSL prompt on a terminal for an encrypted key
        raise ValueError("the client key is encrypted; cni-ipam cannot prompt for its password")

    try:
        cert = cert_data if cert_data else _read(cert_file, origin, "client-certificate")
        key = key_data if key_data else _read(key_file, origin, "client-key")
        if cert_file and key_file and os.path.realpath(cert_file) == os.path.realpath(key_file):
            key = b""  # kubelet-client-current.pem: certificate and key in one file
        _load_chain_from_memory(ctx, key.rstrip(b"\n") + b"\n" + cert, scratch_dir, no_password)
    except (ssl.SSLError, ValueError, OSError) as exc:
        # the reason only: never the text of an exception about a key (it could quote it)
        reason = getattr(exc, "reason", None) or (
            "the key is encrypted" if isinstance(exc, ValueError) else type(exc).__name__
        )
        raise fail(f"usePodCidr: cannot load the client certificate/key of {origin}: {reason}", origin) from None


def _load_chain_from_memory(ctx: ssl.SSLContext, pem: bytes, scratch_dir: str, password=None) -> None:
    """``load_cert_chain`` wants a path: use an anonymous memory file; else a private temporary file
    inside the data dir's cache directory (never /tmp), removed before returning."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None and os.path.isdir("/proc/self/fd"):
        try:
            fd = memfd("cni-ipam-client-cert", getattr(os, "MFD_CLOEXEC", 1))
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                os.write(fd, pem)
                ctx.load_cert_chain(f"/proc/self/fd/{fd}", password=password)
                return
            finally:
                os.close(fd)
    from cni_ipam.store import fs as safefs

    safefs.makedirs(scratch_dir)
    tmp = os.path.join(scratch_dir, f".client-{os.getpid()}-{os.urandom(6).hex()}.pem")
    fd = os.open(tmp, safefs.O_NEW, 0o600)
    try:
        os.write(fd, pem)
        os.close(fd)
        fd = -1
        ctx.load_cert_chain(tmp, password=password)
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)


# ---------------------------------------------------------------------------------- the request
def get_node(tgt: Target, node: str, timeout: float) -> dict:
    """GET the node: ``timeout`` bounds the whole request by one deadline (name resolution,
    connect, TLS handshake, sending, status line, headers and body: see cni_ipam.httpio), never
    each ``recv``: a server dripping a byte a second is cut off at the deadline."""
    import time

    from cni_ipam import httpio

    deadline = time.monotonic() + timeout
    url = f"{tgt.prefix}/api/v1/nodes/{node}"
    where = f"the API server {tgt.server} ({tgt.origin})"
    conn = httpio.Connection(tgt.host, tgt.port, context=tgt.context, server_name=tgt.server_name)
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT, "Connection": "close"}
    if tgt.auth:
        headers["Authorization"] = tgt.auth
    try:
        resp = conn.request("GET", url, None, headers, deadline, MAX_RESPONSE)
    except ssl.SSLCertVerificationError as exc:
        raise fail(
            f"usePodCidr: TLS verification of {where} failed: {exc.verify_message or exc} "
            "(check certificate-authority / tls-server-name)",
            tgt.origin,
        ) from None
    except ssl.SSLError as exc:
        raise fail(
            f"usePodCidr: TLS handshake with {where} failed: {exc.reason or exc} (is the client certificate accepted?)",
            tgt.origin,
        ) from None
    except ValueError as exc:  # a path or header no HTTP request can carry: nothing was sent
        raise fail(f"usePodCidr: cannot ask {where}: {exc}", tgt.origin) from None
    except httpio.TooLarge:
        raise fail(f"usePodCidr: the answer from {where} is larger than {MAX_RESPONSE} bytes", tgt.origin) from None
    except OSError as exc:
        text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise fail(f"usePodCidr: cannot reach {where}: {text}", tgt.origin, TRY_AGAIN_LATER) from None
    finally:
        conn.close()
    status, body = resp.status, resp.body
    if status == 200:
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise fail(f"usePodCidr: {where} answered with something that is not JSON", tgt.origin) from None
        except (RecursionError, MemoryError):  # a nesting bomb: never a 999 that skips the cache
            raise fail(f"usePodCidr: {where} answered with JSON nested too deeply", tgt.origin) from None
    reason = _status_message(body)
    if status == 401:
        raise ApiAnswer(
            PODCIDR_UNAVAILABLE,
            f"usePodCidr: {where} rejected the credentials (401 Unauthorized{reason})",
            tgt.origin,
            status,
            body,
        )
    if status == 403:
        raise ApiAnswer(
            PODCIDR_UNAVAILABLE,
            f"usePodCidr: {where} forbids reading node {node} (403 Forbidden{reason}); "
            "the user needs RBAC 'get' on 'nodes'",
            tgt.origin,
            status,
            body,
        )
    if status == 404:
        raise ApiAnswer(
            PODCIDR_UNAVAILABLE,
            f"usePodCidr: node {node} not found at {where} (404{reason})",
            f"node {node}",
            status,
            body,
        )
    if status == 429 or status >= 500:
        raise ApiAnswer(
            TRY_AGAIN_LATER, f"usePodCidr: {where} is unavailable ({status}{reason})", tgt.origin, status, body
        )
    raise ApiAnswer(
        PODCIDR_UNAVAILABLE, f"usePodCidr: {where} answered {status}{reason} for node {node}", tgt.origin, status, body
    )


def _status_fields(body: bytes) -> tuple[str, str]:
    """(``reason``, ``details.kind``) of a Kubernetes Status object, ("", "") for anything else."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except Exception:
        return "", ""
    if not isinstance(doc, dict) or doc.get("kind") != "Status":
        return "", ""
    reason = doc.get("reason")
    details = doc.get("details")
    kind = details.get("kind") if isinstance(details, dict) else None
    return (reason if isinstance(reason, str) else "", kind if isinstance(kind, str) else "")


def _status_message(body: bytes) -> str:
    try:
        msg = json.loads(body.decode("utf-8")).get("message")
    except Exception:
        return ""
    return f": {str(msg)[:200]}" if msg else ""
