"""A stand-in Kubernetes API server for the usePodCidr tests (no real kube-apiserver can be installed
here).  It is not a mock of our code: it is a separate HTTPS server on 127.0.0.1 that the plugin
reaches over real TCP + TLS, with certificates made by ``make_pki`` (the ``cryptography`` package).

What it checks, as kube-apiserver would for ``GET /api/v1/nodes/<name>``:
- TLS with a server certificate for 127.0.0.1/localhost signed by the test CA;
- ``mode="token"``: ``Authorization: Bearer <token>`` must match (else 401 Status); a token listed in
  ``forbidden_tokens`` authenticates but is not allowed to read nodes (403 Status);
- ``mode="cert"``: the client certificate is required at the TLS layer (``CERT_REQUIRED``, verified
  against the client CA) and its subject CN must be in ``client_cns`` (else 401);
- serves node objects with ``spec.podCIDR`` / ``spec.podCIDRs`` as set in ``nodes``; 404 Status for
  unknown nodes and other paths; ``fail_status`` forces an answer (e.g. 503) to test retries.
Every request is recorded in ``requests`` (path, auth kind, subject) so tests can count API calls.

It misbehaves on request (``api.misbehave = "<how>"``, ``api.drip_interval`` seconds per byte):
``drip`` answers a valid node one byte at a time (status line, headers and body), ``drip-body``
sends the headers at once and drips the body, ``redirect`` answers 302 to ``/redirected`` (which
would serve the node: a client that follows it is caught in ``requests``), ``bomb`` sends 200 with
JSON nested 100,000 deep, ``huge`` a 9 MiB body, ``garbage`` non-JSON, ``stall`` the headers of a
body that never comes; ``DripProxy`` drips every byte of the server, the TLS handshake included.
Hostile node objects are just ``nodes`` entries (e.g. ``["0.0.0.0/0"]``).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


# ---------------------------------------------------------------------------------- PKI
def _name(cn: str, org: "str | None" = None):
    from cryptography.x509.oid import NameOID
    from cryptography import x509

    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _issue(subject, key, issuer_name, issuer_key, ca: bool, server: bool = False, client: bool = False, sans=()):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        b = b.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


class Pki:
    """PEM bytes and file paths of a CA, a server certificate and client certificates."""

    def __init__(self, directory: str, client_cns=("system:node:podcidr-node-a",)) -> None:
        from cryptography import x509

        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        ca_key = _key()
        ca_name = _name("podcidr-test-ca")
        ca = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)
        self.ca_pem = _pem_cert(ca)
        self.ca_file = self._write("ca.crt", self.ca_pem)
        srv_key = _key()
        srv = _issue(
            _name("kube-apiserver"), srv_key, ca_name, ca_key, ca=False, server=True,
            sans=(
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName("localhost"),
                x509.DNSName("kubernetes.default.svc"),
            ),
        )
        self.server_cert_file = self._write("server.crt", _pem_cert(srv))
        self.server_key_file = self._write("server.key", _pem_key(srv_key))
        self.clients = {}
        for cn in client_cns:
            key = _key()
            cert = _issue(_name(cn, "system:nodes"), key, ca_name, ca_key, ca=False, client=True)
            safe = cn.replace(":", "_")
            self.clients[cn] = {
                "cert_pem": _pem_cert(cert),
                "key_pem": _pem_key(key),
                "cert_file": self._write(f"{safe}.crt", _pem_cert(cert)),
                "key_file": self._write(f"{safe}.key", _pem_key(key)),
            }
        # A second, unrelated CA: a kubeconfig trusting it must fail TLS verification.
        other_key = _key()
        other_name = _name("podcidr-other-ca")
        self.other_ca_pem = _pem_cert(_issue(other_name, other_key, other_name, other_key, ca=True))
        self.other_ca_file = self._write("other-ca.crt", self.other_ca_pem)

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return path


# ---------------------------------------------------------------------------------- server
def node_object(name: str, cidrs) -> dict:
    """A v1 Node; ``cidrs`` is a list of pod CIDRs (both fields set, as the controller manager does)
    or a dict used as the raw ``spec`` (e.g. only the old single ``podCIDR`` field)."""
    spec: dict = {}
    if isinstance(cidrs, dict):
        spec = dict(cidrs)
    elif cidrs:
        spec["podCIDR"] = cidrs[0]
        spec["podCIDRs"] = list(cidrs)
    metadata = {"name": name, "uid": "0000-" + name}
    return {"kind": "Node", "apiVersion": "v1", "metadata": metadata, "spec": spec, "status": {}}


def status_object(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def setup(self) -> None:
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            self.server.api.handshake_failures.append(str(exc))
            raise
        super().setup()

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        api = self.server.api
        auth = self.headers.get("Authorization", "")
        peer = self.request.getpeercert() if api.mode == "cert" else None
        subject = ""
        if peer:
            subject = dict(x[0] for x in peer.get("subject", ())).get("commonName", "")
        api.requests.append({"path": self.path, "auth": auth, "cn": subject})
        if api.misbehave and self._misbehave(api):
            return
        if api.fail_status:
            failure = status_object(api.fail_status, "ServiceUnavailable", "stand-in told to fail")
            return self._send(api.fail_status, failure)
        if api.mode == "token":
            token = auth[7:] if auth.startswith("Bearer ") else None
            if token in api.forbidden_tokens:
                message = 'nodes is forbidden: User "test" cannot get resource "nodes"'
                return self._send(403, status_object(403, "Forbidden", message))
            if token != api.token:
                return self._send(401, status_object(401, "Unauthorized", "Unauthorized"))
        elif subject not in api.client_cns:
            return self._send(401, status_object(401, "Unauthorized", "Unauthorized"))
        prefix = api.prefix + "/api/v1/nodes/"
        name = self.path[len(prefix):] if self.path.startswith(prefix) else None
        if name is None or "/" in name or name not in api.nodes:
            return self._send(404, status_object(404, "NotFound", f'nodes "{name}" not found'))
        self._send(200, node_object(name, api.nodes[name]))

    def _misbehave(self, api: "ApiServer") -> bool:
        how = api.misbehave
        name = self.path.rsplit("/", 1)[-1]
        node = json.dumps(node_object(name, api.nodes.get(name, ["10.99.0.0/24"]))).encode()
        if how == "redirect" and not self.path.endswith("/redirected"):
            self.send_response(302)
            self.send_header("Location", f"{api.url}/redirected")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        if how == "redirect":
            self._send(200, node_object(name, api.nodes.get(name, ["10.99.0.0/24"])))
            return True
        bodies = {
            "bomb": b"[" * 100000 + b"]" * 100000,
            "huge": b" " * (9 << 20) + node,
            "garbage": b"<html>not json</html>",
        }
        if how in bodies:
            body = bodies[how]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(node)}\r\n\r\n").encode()
        if how == "stall":
            self.wfile.write(head)
            self.wfile.flush()
            api.stalled.wait(30)
            return True
        if how in ("drip", "drip-body"):
            data = head + node if how == "drip" else node
            if how == "drip-body":
                self.wfile.write(head)
            for i in range(len(data)):
                if api.stalled.is_set():
                    break
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(api.drip_interval)
            return True
        raise ValueError(f"unknown misbehaviour {how!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: "ApiServer"

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.settimeout(10)
        # The TLS handshake runs in the handler thread, so a bad client cannot stall the server.
        return self.api.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address) -> None:
        pass


class ApiServer:
    """``with ApiServer(pki, nodes={...}, token="t") as api: api.url``; ``api.stop()`` = API down."""

    def __init__(self, pki: Pki, nodes: "dict | None" = None, mode: str = "token", token: str = "podcidr-token",
                 client_cns=("system:node:podcidr-node-a",), prefix: str = "") -> None:
        self.pki = pki
        self.nodes = dict(nodes or {})
        self.mode = mode
        self.token = token
        self.forbidden_tokens: set = set()
        self.client_cns = set(client_cns)
        self.prefix = prefix
        self.fail_status = 0
        self.misbehave = ""
        self.drip_interval = 1.0
        self.stalled = threading.Event()  # set by stop(): ends a stall or a drip
        self.requests: list = []
        self.handshake_failures: list = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.server_cert_file, pki.server_key_file)
        if mode == "cert":
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=pki.ca_file)
        self.ssl_context = ctx
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.api = self
        self.port = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}{prefix}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.running = True

    def node_requests(self) -> int:
        return sum(1 for r in self.requests if "/api/v1/nodes/" in r["path"])

    def stop(self) -> None:
        self.stalled.set()
        if self.running:
            self.running = False
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)

    def __enter__(self) -> "ApiServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class DripProxy:
    """A TCP proxy in front of an ``ApiServer`` that forwards the server's bytes one at a time,
    ``interval`` seconds apart: the TLS handshake drips too (``ApiServer.misbehave = "drip"`` only
    drips the HTTP answer).  ``with DripProxy(api.port, 0.05) as proxy: proxy.url``."""

    def __init__(self, port: int, interval: float) -> None:
        import socket

        self.port, self.interval = port, interval
        self.stopped = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.1)
        self.url = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import socket

        while not self.stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            server = socket.create_connection(("127.0.0.1", self.port))
            for src, dst, drip in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(src, dst, drip), daemon=True).start()

    def _pump(self, src, dst, drip: bool) -> None:
        try:
            while not self.stopped.is_set():
                data = src.recv(1 if drip else 65536)
                if not data:
                    break
                dst.sendall(data)
                if drip:
                    time.sleep(self.interval)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass

    def __enter__(self) -> "DripProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self._listener.close()
        self._thread.join(5)


def write_kubeconfig(path: str, server: str, *, ca_file=None, ca_data=None, token=None, token_file=None,
                     cert_file=None, key_file=None, cert_data=None, key_data=None, extra_cluster=None,
                     extra_user=None) -> str:
    """A kubeconfig as kubeadm/kubectl write them (YAML), with the given credential variant."""
    import base64

    import yaml

    cluster: dict = {"server": server}
    if ca_file:
        cluster["certificate-authority"] = ca_file
    if ca_data:
        cluster["certificate-authority-data"] = base64.b64encode(ca_data).decode()
    user: dict = {}
    if token:
        user["token"] = token
    if token_file:
        user["tokenFile"] = token_file
    if cert_file:
        user["client-certificate"] = cert_file
    if key_file:
        user["client-key"] = key_file
    if cert_data:
        user["client-certificate-data"] = base64.b64encode(cert_data).decode()
    if key_data:
        user["client-key-data"] = base64.b64encode(key_data).decode()
    cluster.update(extra_cluster or {})
    user.update(extra_user or {})
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "podcidr-cluster", "cluster": cluster}],
        "users": [{"name": "cni-ipam", "user": user}],
        "contexts": [{"name": "cni-ipam@podcidr", "context": {"cluster": "podcidr-cluster", "user": "cni-ipam"}}],
        "current-context": "cni-ipam@podcidr",
        "preferences": {},
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(doc, fh, default_flow_style=False)
    return path


class _PkiFiles:
    """The server side of a ``Pki`` written by another process (for ``main``)."""

    def __init__(self, directory: str) -> None:
        self.ca_file = os.path.join(directory, "ca.crt")
        self.server_cert_file = os.path.join(directory, "server.crt")
        self.server_key_file = os.path.join(directory, "server.key")


def main(argv=None) -> int:
    """``python -m tests.integration.podcidr_apiserver '<json>'``: serve until stdin closes.

    Used to run the stand-in inside a test network namespace (``ip netns exec``), where the plugin's
    127.0.0.1 is that namespace's loopback.  JSON keys: pki_dir, nodes, mode, token, client_cns.
    Prints the port on the first line of stdout.
    """
    import sys

    spec = json.loads((argv or sys.argv[1:])[0])
    api = ApiServer(_PkiFiles(spec["pki_dir"]), nodes=spec.get("nodes"), mode=spec.get("mode", "token"),
                    token=spec.get("token", "podcidr-token"), client_cns=spec.get("client_cns", ()))
    print(api.port, flush=True)
    try:
        sys.stdin.read()
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
