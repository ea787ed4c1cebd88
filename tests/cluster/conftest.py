"""Real etcd for the cluster tests: Debian's ``/usr/bin/etcd`` on free loopback ports.

Fixtures (all clusters are session-scoped: starting etcd costs ~0.3-1 s, so the whole cluster suite
shares five of them; tests isolate themselves with ``etcd_prefix``, a unique key prefix):

- ``etcd_single``: one plain-HTTP member.
- ``etcd3``: a three-member cluster (``etcd_cluster3`` underneath), healed before each test: every
  member that a previous test stopped, killed or paused is running again and the cluster is healthy.
  ``cluster.members[i].kill()/stop()/pause()/resume()/start()`` for failover tests.
- ``etcd_tls``: one member serving HTTPS only, with ``--client-cert-auth``; the test-generated PKI is
  ``etcd_tls.pki`` (``ca``, ``client_cert``/``client_key`` signed by that CA, and a ``rogue_cert``/
  ``rogue_key`` signed by another CA).
- ``etcd_auth``: one member with authentication enabled: user ``root`` (role root) and user
  ``limited`` whose role ``limited`` may read and write only under ``etcd_auth.limited_prefix``;
  passwords in ``etcd_auth.users``.  ``etcd_tls_auth``: the same over TLS with client certificates.

``cluster.endpoints`` is the list of client URLs; ``cluster.client_kwargs(user=None)`` the keyword
arguments for ``EtcdClient`` (TLS files, credentials).  Every etcd runs in its own process group,
killed (SIGKILL to the group) and its data dir removed at the end of the session, on failure too,
and at interpreter exit if pytest itself dies.  Data dirs live in /dev/shm when it has 2 GB free
(etcd fsyncs every write; each member takes ~125 MB, seven at most run at once), else in the
temporary directory; CNI_IPAM_ETCD_TMP overrides the parent directory.  Without /usr/bin/etcd the
fixtures skip with the reason.  Start-up times are printed in the terminal summary.
"""

from __future__ import annotations

import atexit
import base64
import datetime
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid

import pytest

ETCD = os.environ.get("CNI_IPAM_ETCD", "/usr/bin/etcd")
READY_TIMEOUT = 20.0
STARTUP_TIMES: list = []  # (what, seconds)
_LIVE_GROUPS: set = set()


def _kill_leftovers() -> None:  # pytest itself died: no etcd survives the interpreter
    for pgid in list(_LIVE_GROUPS):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


atexit.register(_kill_leftovers)


def need_etcd() -> None:
    if not os.access(ETCD, os.X_OK):
        pytest.skip(f"{ETCD} is missing (apt-get install etcd-server, or scripts/setup.d/40-etcd.sh)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_root() -> str:
    parent = os.environ.get("CNI_IPAM_ETCD_TMP")
    if not parent and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > 2 << 30:  # a member takes ~125 MB there (64 MB of preallocated WAL)
            parent = "/dev/shm"
    return tempfile.mkdtemp(prefix="cni-ipam-etcd-", dir=parent)


# ------------------------------------------------------------------------------------------- PKI
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost (server and client auth: etcd 3.4's
    gateway dials its own gRPC port with it), client certificates from that CA (``client_cert``
    with a CommonName, ``nocn_cert`` without one) and a ``rogue_cert`` from another CA."""

    def __init__(self, directory: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        self.dir = directory
        now = datetime.datetime.now(datetime.timezone.utc)

        def name(cn):
            if cn.startswith("O="):  # no CommonName at all (etcd's gateway refuses a CN when auth is on)
                return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, cn[2:])])
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        def key():
            return ec.generate_private_key(ec.SECP256R1())

        def write(fname, data):
            path = os.path.join(directory, fname)
            with open(path, "wb") as fh:
                fh.write(data)
            os.chmod(path, 0o600)
            return path

        def pem_key(k):
            return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())

        def make_ca(cn):
            k = key()
            cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn)).public_key(k.public_key())
                    .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                    .not_valid_after(now + datetime.timedelta(days=2))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                    .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                 content_commitment=False, key_encipherment=False,
                                                 data_encipherment=False, key_agreement=False,
                                                 encipher_only=False, decipher_only=False), critical=True)
                    .sign(k, hashes.SHA256()))
            return k, cert

        def issue(ca_key, ca_cert, cn, server):
            import ipaddress

            k = key()
            usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
            b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
                 .public_key(k.public_key())
                 .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                 .not_valid_after(now + datetime.timedelta(days=1))
                 .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                 .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
            if server:
                san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
            return k, b.sign(ca_key, hashes.SHA256())

        ca_key, ca_cert = make_ca("cni-ipam test etcd CA")
        rogue_ca_key, rogue_ca_cert = make_ca("cni-ipam test rogue CA")
        pem = serialization.Encoding.PEM
        self.ca = write("ca.pem", ca_cert.public_bytes(pem))
        self.rogue_ca = write("rogue-ca.pem", rogue_ca_cert.public_bytes(pem))
        k, c = issue(ca_key, ca_cert, "etcd-server", True)
        self.server_cert = write("server.pem", c.public_bytes(pem))
        self.server_key = write("server-key.pem", pem_key(k))
        k, c = issue(ca_key, ca_cert, "cni-ipam-node", False)
        self.client_cert = write("client.pem", c.public_bytes(pem))
        self.client_key = write("client-key.pem", pem_key(k))
        k, c = issue(ca_key, ca_cert, "O=cni-ipam", False)
        self.nocn_cert = write("client-nocn.pem", c.public_bytes(pem))
        self.nocn_key = write("client-nocn-key.pem", pem_key(k))
        k, c = issue(rogue_ca_key, rogue_ca_cert, "cni-ipam-rogue", False)
        self.rogue_cert, self.rogue_key = write("rogue.pem", c.public_bytes(pem)), write("rogue-key.pem", pem_key(k))


# ------------------------------------------------------------------------------------------- etcd
class Member:
    """One etcd process in its own process group."""

    def __init__(self, cluster: "Cluster", name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = os.path.join(cluster.root, name)
        self.log_path = os.path.join(cluster.root, f"{name}.log")
        self.proc = None
        self.paused = False

    @property
    def scheme(self) -> str:
        return "https" if self.cluster.pki else "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def argv(self, state: str) -> list:
        c = self.cluster
        argv = [ETCD, "--name", self.name, "--data-dir", self.data_dir,
                "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", ",".join(f"{m.name}={m.peer_url}" for m in c.members),
                "--initial-cluster-state", state, "--initial-cluster-token", c.token,
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--logger", "zap", "--log-level", "warn"]
        if c.pki:
            argv += ["--cert-file", c.pki.server_cert, "--key-file", c.pki.server_key,
                     "--trusted-ca-file", c.pki.ca, "--client-cert-auth"]
        return argv

    def start(self) -> None:
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv("new"), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        _LIVE_GROUPS.add(self.proc.pid)
        self.paused = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the member's process group (a crash)."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(10)
        _LIVE_GROUPS.discard(self.proc.pid)
        self.paused = False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s (a clean shutdown)."""
        if not self.running:
            return self.kill()
        if self.paused:
            self.resume()
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def pause(self) -> None:
        """SIGSTOP: the member accepts TCP connections (the kernel does) and never answers."""
        self._signal_group(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)
        self.paused = False

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return b"\n".join(fh.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""


class Cluster:
    def __init__(self, size: int, tls: bool = False) -> None:
        self.root = data_root()
        self.token = f"cni-ipam-test-{uuid.uuid4().hex[:8]}"
        self.pki = Pki(self.root) if tls else None
        self.members: list = []
        self.members = [Member(self, f"m{i}") for i in range(size)]
        self.users: dict = {}  # name -> password
        self.limited_prefix = b""
        self.startup_seconds = 0.0

    @property
    def endpoints(self) -> list:
        return [m.client_url for m in self.members]

    def client_kwargs(self, user=None, cert=True) -> dict:
        """EtcdClient arguments; with auth and TLS the certificate without a CommonName (etcd's
        gateway refuses a CN while auth is enabled: docs/cluster-ops.md)."""
        kw: dict = {}
        if self.pki:
            kw["ca_file"] = self.pki.ca
            if cert and self.users:
                kw["cert_file"], kw["key_file"] = self.pki.nocn_cert, self.pki.nocn_key
            elif cert:
                kw["cert_file"], kw["key_file"] = self.pki.client_cert, self.pki.client_key
        if user is not None:
            kw["username"], kw["password"] = user, self.users[user]
        return kw

    def ssl_context(self):
        ctx = ssl.create_default_context(cafile=self.pki.ca)
        ctx.load_cert_chain(self.pki.nocn_cert, self.pki.nocn_key)
        return ctx

    def post(self, member: Member, path: str, body: dict, token=None, timeout: float = 5.0):
        """A raw gateway request (independent of the client under test): (status, JSON doc)."""
        if self.pki:
            conn = http.client.HTTPSConnection("127.0.0.1", member.client_port, timeout=timeout,
                                               context=self.ssl_context())
        else:
            conn = http.client.HTTPConnection("127.0.0.1", member.client_port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = token
        try:
            conn.request("POST", path, body=json.dumps(body), headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data or b"{}")
        finally:
            conn.close()

    def healthy(self, member: Member) -> bool:
        try:
            status, doc = self.post(member, "/v3/kv/range", {"key": base64.b64encode(b"/health-probe").decode()},
                                    timeout=1.0)
        except (OSError, ValueError, http.client.HTTPException):
            return False
        return status == 200 or (self.users and "user name is empty" in str(doc.get("error")))

    def wait_ready(self, members=None, timeout: float = READY_TIMEOUT) -> None:
        members = list(members or self.members)
        end = time.monotonic() + timeout
        while True:
            for m in members:
                if not m.running:
                    code = m.proc.returncode if m.proc else "-"
                    raise RuntimeError(f"etcd {m.name} exited ({code}):\n{m.log_tail()}")
            if all(self.healthy(m) for m in members):
                return
            if time.monotonic() > end:
                raise RuntimeError("etcd did not become ready in time:\n" + "\n".join(m.log_tail(5) for m in members))
            time.sleep(0.05)

    def start(self) -> None:
        t0 = time.monotonic()
        for m in self.members:
            m.start()
        self.wait_ready()
        self.startup_seconds = time.monotonic() - t0

    def heal(self) -> None:
        """Every member running and answering (after a test stopped, killed or paused some)."""
        for m in self.members:
            if m.paused:
                m.resume()
            if not m.running:
                m.start()
        self.wait_ready()

    def close(self) -> None:
        for m in self.members:
            try:
                m.kill()
            except Exception:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def enable_auth(self, prefix: bytes) -> None:
        """root (role root), limited (readwrite on ``prefix`` only), then auth enable."""
        m = self.members[0]
        self.users = {"root": f"root-{uuid.uuid4().hex[:10]}", "limited": f"lim-{uuid.uuid4().hex[:10]}"}
        self.limited_prefix = prefix
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        steps = [
            ("/v3/auth/user/add", {"name": "root", "password": self.users["root"]}),
            ("/v3/auth/role/add", {"name": "root"}),
            ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
            ("/v3/auth/user/add", {"name": "limited", "password": self.users["limited"]}),
            ("/v3/auth/role/add", {"name": "limited"}),
            ("/v3/auth/role/grant", {"name": "limited",
                                     "perm": {"permType": "READWRITE", "key": b64(prefix), "range_end": b64(end)}}),
            ("/v3/auth/user/grant", {"user": "limited", "role": "limited"}),
            ("/v3/auth/enable", {}),
        ]
        for path, body in steps:
            status, doc = self.post(m, path, body)
            if status != 200:
                raise RuntimeError(f"etcd auth set-up {path}: HTTP {status} {doc}")


def _cluster(size: int, what: str, tls: bool = False, auth_prefix=None):
    need_etcd()
    last = None
    for _ in range(3):  # a free port can be taken by another test run between probe and bind
        cluster = Cluster(size, tls=tls)
        try:
            cluster.start()
            if auth_prefix is not None:
                cluster.enable_auth(auth_prefix)
        except RuntimeError as exc:
            cluster.close()
            last = exc
            if "address already in use" in str(exc):
                continue
            raise
        STARTUP_TIMES.append((what, cluster.startup_seconds))
        return cluster
    raise last


def _serve(size: int, what: str, **kw):
    cluster = _cluster(size, what, **kw)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def etcd_single():
    yield from _serve(1, "single member")


@pytest.fixture(scope="session")
def etcd_cluster3():
    yield from _serve(3, "three members")


@pytest.fixture
def etcd3(etcd_cluster3):
    etcd_cluster3.heal()
    yield etcd_cluster3


@pytest.fixture(scope="session")
def etcd_tls():
    yield from _serve(1, "single member, TLS + client certs", tls=True)


@pytest.fixture(scope="session")
def etcd_auth():
    yield from _serve(1, "single member, auth enabled", auth_prefix=b"/cni-ipam-limited/")


@pytest.fixture(scope="session")
def etcd_tls_auth():
    """TLS with client certificates AND authentication (the production set-up)."""
    yield from _serve(1, "single member, TLS + auth", tls=True, auth_prefix=b"/cni-ipam-limited/")


@pytest.fixture
def etcd_prefix() -> bytes:
    """A key prefix no other test (or test run) uses."""
    return f"/cni-ipam-test/{uuid.uuid4().hex[:12]}/".encode()


def pytest_terminal_summary(terminalreporter):
    if STARTUP_TIMES:
        terminalreporter.write_sep("-", "etcd fixture start-up")
        for what, seconds in STARTUP_TIMES:
            terminalreporter.write_line(f"{what}: {seconds:.2f} s")
