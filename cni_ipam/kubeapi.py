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

Inline client certificates and keys never touch the disk: they are loaded through an anonymous
memory file (``memfd``); only where that is impossible are they written, mode 0600, to a temporary
file inside ``<dataDir>/.cni-ipam-podcidr/`` and removed at once.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import ssl

from cni_ipam.errors import PODCIDR_UNAVAILABLE, TRY_AGAIN_LATER, CniError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Optional, Tuple

MAX_RESPONSE = 8 << 20
USER_AGENT = "cni-ipam/usePodCidr"


class Target:
    """Where and how to ask: server URL parts, TLS context, Authorization header, and a description
    of the credentials (``kubeconfig /path (context c, user u)`` or ``in-cluster service account``)."""

    def __init__(self, host: str, port: int, prefix: str, context: ssl.SSLContext, server_name: str, auth: "Optional[str]", origin: str, server: str) -> None:
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


def node_pod_cidrs(target: "Tuple[str, str]", node: str, timeout: float, scratch_dir: str) -> "Tuple[list, str]":
    """``spec.podCIDRs`` (else ``spec.podCIDR``) of ``node`` as networks, and the origin phrase."""
    kind, path = target
    tgt = from_kubeconfig(path, scratch_dir) if kind == "kubeconfig" else in_cluster(path)
    obj = get_node(tgt, node, timeout)
    return pod_cidrs(obj, node, tgt), f"node {node} at {tgt.server} ({tgt.origin})"


def pod_cidrs(obj: "Any", node: str, tgt: "Optional[Target]" = None) -> list:
    spec = obj.get("spec") if isinstance(obj, dict) else None
    if not isinstance(spec, dict):
        spec = {}
    values = spec.get("podCIDRs")
    if not isinstance(values, list) or not values:
        single = spec.get("podCIDR")
        values = [single] if isinstance(single, str) and single else []
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            where = f" at {tgt.server}" if tgt else ""
            raise fail(f"usePodCidr: node {node}{where} has an invalid pod CIDR {value!r}", f"node {node}") from None
    return out


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
        raise fail(f"usePodCidr: KUBERNETES_SERVICE_PORT={port_text!r} is not a port", "KUBERNETES_SERVICE_PORT") from None
    token = _read(os.path.join(sa_dir, "token"), origin, "token").decode("utf-8", "replace").strip()
    ca = os.path.join(sa_dir, "ca.crt")
    ctx = _context(origin, cafile=ca if os.path.exists(ca) else None)
    server = f"https://{'[' + host + ']' if ':' in host else host}:{port}"
    return Target(host, port, "", ctx, host, f"Bearer {token}", origin, server)


def from_kubeconfig(path: str, scratch_dir: str) -> Target:
    try:
        import yaml  # PyYAML: only here, only when the API is really asked
    except ImportError:
        raise fail(
            f"usePodCidr: reading the kubeconfig {path} needs PyYAML, a dependency of cni-ipam (pip install PyYAML, or apt-get install python3-yaml)",
            path,
        ) from None
    raw = _read(path, "", "kubeconfig")
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise fail(f"usePodCidr: kubeconfig {path} is not valid YAML: {str(exc).splitlines()[0]}", path) from None
    if not isinstance(doc, dict):
        raise fail(f"usePodCidr: kubeconfig {path} is not a kubeconfig (no mapping at the top)", path)
    base = os.path.dirname(os.path.abspath(path))

    def bad(what: str) -> CniError:
        return fail(f"usePodCidr: kubeconfig {path}: {what}", path)

    def named(section: str, name: "Optional[str]") -> dict:
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
        raise bad(f"server {server!r} is not a URL") from None
    if url.scheme != "https" or not host:
        raise bad(f"server {server!r} must be an https:// URL (plain HTTP is not supported)")
    if cluster.get("insecure-skip-tls-verify"):
        raise bad("insecure-skip-tls-verify is refused: give certificate-authority or certificate-authority-data")
    for unsupported in ("exec", "auth-provider", "username", "password"):
        if user.get(unsupported):
            raise bad(f"user {context.get('user')!r}: {unsupported} is not supported; use a token, tokenFile or client certificate")

    cadata = _b64(cluster, "certificate-authority-data", bad)
    cafile = _path(cluster, "certificate-authority", base)
    ctx = _context(origin, cafile=None if cadata else cafile, cadata=cadata)
    cert_data = _b64(user, "client-certificate-data", bad)
    key_data = _b64(user, "client-key-data", bad)
    cert_file = _path(user, "client-certificate", base)
    key_file = _path(user, "client-key", base)
    if cert_data or cert_file or key_data or key_file:
        if not (cert_data or cert_file) or not (key_data or key_file):
            raise bad(f"user {context.get('user')!r} has a client certificate without a key or a key without a certificate")
        _load_client_cert(ctx, origin, cert_file, key_file, cert_data, key_data, scratch_dir)

    auth = None
    token = user.get("token")
    if isinstance(token, str) and token.strip():
        auth = f"Bearer {token.strip()}"
    else:
        token_file = _path(user, "tokenFile", base)
        if token_file:
            token = _read(token_file, origin, "tokenFile").decode("utf-8", "replace").strip()
            if not token:
                raise bad(f"tokenFile {token_file} is empty")
            auth = f"Bearer {token}"
    sni = cluster.get("tls-server-name") or host
    prefix = url.path.rstrip("/")
    shown = f"https://{url.netloc}{prefix}"
    return Target(host, port, prefix, ctx, str(sni), auth, origin, shown)


def _b64(section: dict, key: str, bad) -> "Optional[bytes]":
    value = section.get(key)
    if not value:
        return None
    try:
        return base64.b64decode(str(value).strip(), validate=False)
    except ValueError:
        raise bad(f"{key} is not base64") from None


def _path(section: dict, key: str, base: str) -> "Optional[str]":
    value = section.get(key)
    if not value:
        return None
    return os.path.join(base, str(value))  # an absolute value stays as it is


def _read(path: str, origin: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(1 << 20)
    except OSError as exc:
        where = f" ({origin})" if origin else ""
        raise fail(f"usePodCidr: cannot read {what} {path}{where}: {exc.strerror}", path) from None


def _context(origin: str, cafile: "Optional[str]" = None, cadata: "Optional[bytes]" = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    try:
        if cadata:
            ctx.load_verify_locations(cadata=cadata.decode("ascii", "replace"))
        elif cafile:
            ctx.load_verify_locations(cafile=cafile)
        else:
            ctx.load_default_certs()
    except (ssl.SSLError, OSError, ValueError) as exc:
        what = "certificate-authority-data" if cadata else f"certificate-authority {cafile}" if cafile else "system CAs"
        raise fail(f"usePodCidr: cannot load the {what} of {origin}: {exc}", origin) from None
    return ctx


def _load_client_cert(ctx, origin, cert_file, key_file, cert_data, key_data, scratch_dir) -> None:
    def no_password():  # never let OpenSSL prompt on a terminal for an encrypted key
        raise ValueError("the client key is encrypted; cni-ipam cannot prompt for its password")

    try:
        if cert_file and key_file:
            ctx.load_cert_chain(cert_file, key_file, password=no_password)
            return
        cert = cert_data if cert_data else _read(cert_file, origin, "client-certificate")
        key = key_data if key_data else _read(key_file, origin, "client-key")
        _load_chain_from_memory(ctx, key.rstrip(b"\n") + b"\n" + cert, scratch_dir)
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise fail(f"usePodCidr: cannot load the client certificate/key of {origin}: {exc}", origin) from None


def _load_chain_from_memory(ctx: ssl.SSLContext, pem: bytes, scratch_dir: str) -> None:
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
                ctx.load_cert_chain(f"/proc/self/fd/{fd}")
                return
            finally:
                os.close(fd)
    os.makedirs(scratch_dir, mode=0o755, exist_ok=True)
    tmp = os.path.join(scratch_dir, f".client-{os.getpid()}-{os.urandom(6).hex()}.pem")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, pem)
        os.close(fd)
        fd = -1
        ctx.load_cert_chain(tmp)
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)


# ---------------------------------------------------------------------------------- the request
def get_node(tgt: Target, node: str, timeout: float) -> dict:
    import http.client
    import socket

    class Connection(http.client.HTTPSConnection):
        def connect(self) -> None:  # as HTTPSConnection, with tls-server-name as SNI/host name
            sock = socket.create_connection((self.host, self.port), self.timeout)
            self.sock = tgt.context.wrap_socket(sock, server_hostname=tgt.server_name)

    url = f"{tgt.prefix}/api/v1/nodes/{node}"
    where = f"the API server {tgt.server} ({tgt.origin})"
    conn = Connection(tgt.host, tgt.port, timeout=timeout, context=tgt.context)
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if tgt.auth:
        headers["Authorization"] = tgt.auth
    try:
        conn.request("GET", url, headers=headers)
        resp = conn.getresponse()
        body = resp.read(MAX_RESPONSE + 1)
        status = resp.status
    except ssl.SSLCertVerificationError as exc:
        raise fail(
            f"usePodCidr: TLS verification of {where} failed: {exc.verify_message or exc} "
            "(check certificate-authority / tls-server-name)",
            tgt.origin,
        ) from None
    except ssl.SSLError as exc:
        raise fail(f"usePodCidr: TLS handshake with {where} failed: {exc.reason or exc} (is the client certificate accepted?)", tgt.origin) from None
    except (OSError, http.client.HTTPException) as exc:
        text = "timed out" if isinstance(exc, socket.timeout) else (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
        raise fail(f"usePodCidr: cannot reach {where}: {text}", tgt.origin, TRY_AGAIN_LATER) from None
    finally:
        conn.close()
    if status == 200:
        if len(body) > MAX_RESPONSE:
            raise fail(f"usePodCidr: the node object from {where} is larger than {MAX_RESPONSE} bytes", tgt.origin)
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise fail(f"usePodCidr: {where} answered with something that is not JSON", tgt.origin) from None
    reason = _status_message(body)
    if status == 401:
        raise fail(f"usePodCidr: {where} rejected the credentials (401 Unauthorized{reason})", tgt.origin)
    if status == 403:
        raise fail(
            f"usePodCidr: {where} forbids reading node {node} (403 Forbidden{reason}); "
            "the user needs RBAC 'get' on 'nodes'",
            tgt.origin,
        )
    if status == 404:
        raise fail(f"usePodCidr: node {node} not found at {where} (404{reason})", f"node {node}")
    if status == 429 or status >= 500:
        raise fail(f"usePodCidr: {where} is unavailable ({status}{reason})", tgt.origin, TRY_AGAIN_LATER)
    raise fail(f"usePodCidr: {where} answered {status}{reason} for node {node}", tgt.origin)


def _status_message(body: bytes) -> str:
    try:
        msg = json.loads(body.decode("utf-8")).get("message")
    except Exception:
        return ""
    return f": {str(msg)[:200]}" if msg else ""
