"""The etcd JSON-gateway client against real etcd (Debian's etcd-server, started by conftest.py):
every method, the gateway's quirks, failover in a three-member cluster, bounded time when nothing
answers, TLS with client certificates, and authentication."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from cni_ipam.cluster import etcd as etcd_mod
from cni_ipam.cluster import etcdwire
from cni_ipam.cluster.etcd import (
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    cmp_create,
    cmp_mod,
    cmp_value,
    cmp_version,
    op_delete,
    op_get,
    op_put,
    prefix_end,
)

INT64_MAX = (1 << 63) - 1


# ------------------------------------------------------------------------------- pure helpers
@pytest.mark.parametrize("prefix, end", [
    (b"/a/", b"/a0"), (b"a", b"b"), (b"a\xff", b"b"), (b"a\xff\xff", b"b"), (b"\xff", b"\0"), (b"", b"\0"),
    (b"\x00", b"\x01"),
])
def test_prefix_end(prefix, end):
    assert prefix_end(prefix) == end


def test_compare_rejects_unknown_operator():
    with pytest.raises(ValueError, match="one of"):
        cmp_mod(b"k", "==", 1)


def test_keys_and_values_must_be_bytes():
    with pytest.raises(TypeError):
        op_put("text", b"v")


@pytest.mark.parametrize("endpoints, why", [
    ([], "no etcd endpoint"), ("", "no etcd endpoint"), (["ftp://h:1"], "scheme"), (["http://h:99999"], "port"),
    (["http://h:1/v3"], "no path"), (["http://user:pw@h:1"], "no path"), (["http://[::1:1"], "IPv6"),
])
def test_bad_endpoints_fail_at_construction(endpoints, why):
    with pytest.raises(EtcdError, match=why):
        EtcdClient(endpoints)


def test_endpoint_forms():
    c = EtcdClient("http://127.0.0.1:1, https://[::1]:2,localhost")
    assert c.endpoints == ["http://127.0.0.1:1", "https://[::1]:2", "http://localhost:2379"]
    assert c.endpoint == "http://127.0.0.1:1"


def test_repr_hides_password():
    c = EtcdClient(["http://127.0.0.1:1"], username="u", password="s3cret-pw")
    assert "s3cret-pw" not in repr(c)


# ------------------------------------------------------------------------------- key-value
@pytest.fixture
def client(etcd_single):
    c = EtcdClient(etcd_single.endpoints)
    yield c
    c.close()


def test_put_get_delete_binary_keys_and_values(client, etcd_prefix):
    key = etcd_prefix + b"\x00bin\xff\n"
    rev = client.put(key, b"\x00\x01\xfe\xff value")
    assert rev > 0
    assert client.get(key) == (b"\x00\x01\xfe\xff value", rev)
    rev2 = client.put(key, b"")  # an empty value: the gateway omits "value"
    assert client.get(key) == (b"", rev2) and rev2 > rev
    assert client.delete(key) == 1
    assert client.delete(key) == 0  # the gateway omits "deleted": 0
    assert client.get(key) is None


def test_range_prefix_empty(client, etcd_prefix):
    assert client.range_prefix(etcd_prefix) == []  # the gateway omits "kvs" and "count"


def test_range_prefix_selects_exactly_the_prefix_sorted(client, etcd_prefix):
    inside = [etcd_prefix + s for s in (b"b", b"a", b"\xff\xff", b"a/deeper", b"")]
    outside = [etcd_prefix[:-1], etcd_prefix[:-1] + b"0", etcd_prefix[:-1] + b".x"]  # "/" + 1 == "0"
    revs = {k: client.put(k, b"v-" + k) for k in inside + outside}
    got = client.range_prefix(etcd_prefix)
    assert [kv[0] for kv in got] == sorted(inside)
    for key, value, mod, create in got:
        assert value == b"v-" + key and mod == create == revs[key]
    keys_only = client.range_prefix(etcd_prefix, keys_only=True)
    assert [(k, v) for k, v, _, _ in keys_only] == [(k, b"") for k in sorted(inside)]
    for k in outside:
        client.delete(k)


def test_range_prefix_paginates_at_one_revision(client, etcd_prefix, monkeypatch):
    monkeypatch.setattr(etcd_mod, "PAGE_SIZE", 7)
    keys = [etcd_prefix + f"k{i:03d}".encode() for i in range(30)]
    for k in keys:
        client.put(k, k)
    calls = []
    real_call = client._call

    def call_then_write(path, body):  # a write lands between two pages: not in the listing
        doc = real_call(path, body)
        calls.append(body)
        if len(calls) == 1:
            real_call("/v3/kv/put", op_put(etcd_prefix + b"k000-late", b"late")["request_put"])
            real_call("/v3/kv/deleterange", {"key": etcd_mod._b64(keys[-1])})
        return doc

    monkeypatch.setattr(client, "_call", call_then_write)
    got = client.range_prefix(etcd_prefix)
    assert [k for k, _, _, _ in got] == keys  # the snapshot of the first page's revision
    assert len(calls) == 5  # 30 keys in pages of 7
    assert all(c.get("revision") for c in calls[1:])
    monkeypatch.undo()
    now = [k for k, _, _, _ in client.range_prefix(etcd_prefix)]
    assert etcd_prefix + b"k000-late" in now and keys[-1] not in now


def test_a_large_answer_is_read_whole(client, etcd_prefix, monkeypatch):
    """Pages of 1000 keys of 300 bytes (~400 KB of JSON): the gateway sends them chunked."""
    from cni_ipam import httpio

    value = bytes(range(256)) + b"v" * 44
    for start in range(0, 1500, 100):
        client.txn([], [op_put(etcd_prefix + b"%05d" % i, value) for i in range(start, start + 100)], [])
    chunked = []
    real = httpio._Reader._chunked

    def counted(self, max_body):
        body = real(self, max_body)
        chunked.append(len(body))
        return body

    monkeypatch.setattr(httpio._Reader, "_chunked", counted)
    got = client.range_prefix(etcd_prefix)
    assert len(chunked) == 2 and min(chunked) > 100_000, chunked
    assert [k for k, _, _, _ in got] == [etcd_prefix + b"%05d" % i for i in range(1500)]
    assert all(v == value for _, v, _, _ in got)


def test_txn_create_if_absent(client, etcd_prefix):
    key = etcd_prefix + b"block"
    ok, responses, rev = client.txn([cmp_create(key, "=", 0)], [op_put(key, b"node-a")], [op_get(key)])
    assert ok is True and responses == [{"type": "put", "revision": rev}]
    # the second claim fails its compare: the gateway omits "succeeded"; the failure branch ran
    ok, responses, rev2 = client.txn([cmp_create(key, "=", 0)], [op_put(key, b"node-b")], [op_get(key)])
    assert ok is False and rev2 == rev
    assert responses == [{"type": "range", "kvs": [(key, b"node-a", rev, rev)], "count": 1, "more": False}]
    assert client.get(key) == (b"node-a", rev)


def test_txn_empty_branches_and_several_ops(client, etcd_prefix):
    a, b = etcd_prefix + b"a", etcd_prefix + b"b"
    ok, responses, _ = client.txn([], [op_put(a, b"1"), op_put(b, b"2"), op_get(etcd_prefix, prefix=True)], [])
    assert ok is True
    assert [r["type"] for r in responses] == ["put", "put", "range"]
    assert [kv[:2] for kv in responses[2]["kvs"]] == [(a, b"1"), (b, b"2")]
    ok, responses, _ = client.txn([cmp_value(a, "=", b"nope")], [], [])
    assert ok is False and responses == []
    ok, responses, _ = client.txn([], [op_delete(etcd_prefix, prefix=True)], [])
    assert responses[0]["type"] == "delete" and responses[0]["deleted"] == 2
    assert client.range_prefix(etcd_prefix) == []


@pytest.mark.parametrize("op, holds", [("=", [0]), ("!=", [-1, 1]), ("<", [1]), (">", [-1])])
def test_txn_compare_operators(client, etcd_prefix, op, holds):
    key = etcd_prefix + b"k"
    rev = client.put(key, b"m")
    client.put(key, b"m")  # version 2, mod revision rev+1
    mod = rev + 1
    for delta in (-1, 0, 1):
        want = delta in holds
        assert client.txn([cmp_mod(key, op, mod + delta)], [], [])[0] is want, ("mod", op, delta)
        assert client.txn([cmp_create(key, op, rev + delta)], [], [])[0] is want, ("create", op, delta)
        assert client.txn([cmp_version(key, op, 2 + delta)], [], [])[0] is want, ("version", op, delta)
        value = {-1: b"l", 0: b"m", 1: b"n"}[delta]
        assert client.txn([cmp_value(key, op, value)], [], [])[0] is want, ("value", op, delta)


def test_big_int64_values_round_trip(client, etcd_prefix):
    key = etcd_prefix + b"big"
    rev = client.put(key, b"x")
    # int64 beyond 2**53 travel as JSON strings: exact, not rounded through a float
    assert client.txn([cmp_mod(key, "<", INT64_MAX)], [], [])[0] is True
    assert client.txn([cmp_mod(key, "=", rev + (1 << 60))], [], [])[0] is False
    assert etcdwire._int("9223372036854775807") == INT64_MAX


def test_the_lease_api_is_gone():
    """Nothing uses leases: the client has no lease calls and op_put no lease argument."""
    for name in ("lease_grant", "lease_keepalive", "lease_revoke"):
        assert not hasattr(EtcdClient, name)
    with pytest.raises(TypeError):
        op_put(b"k", b"v", lease=1)  # type: ignore[call-arg]


def test_etcd_errors_name_the_endpoint(client, etcd_prefix):
    with pytest.raises(EtcdError) as info:
        client.txn([], [op_put(etcd_prefix + b"k", b"1"), op_put(etcd_prefix + b"k", b"2")], [])  # one key twice
    assert "duplicate key" in str(info.value) and client.endpoint in str(info.value)
    assert not isinstance(info.value, EtcdUnavailable)
    assert not str(info.value).startswith("etcd:")


def test_connection_is_kept_alive(client, etcd_prefix):
    client.put(etcd_prefix + b"k", b"v")
    conn = client._conn[1]
    for _ in range(5):
        client.get(etcd_prefix + b"k")
    assert client._conn[1] is conn


def test_a_closed_kept_alive_connection_is_replaced(client, etcd_prefix):
    client.put(etcd_prefix + b"k", b"v")
    client._conn[1].sock.shutdown(socket.SHUT_RDWR)  # as if the server had dropped the idle connection
    assert client.get(etcd_prefix + b"k")[0] == b"v"


# ------------------------------------------------------------------------------- nothing answers
class Silent:
    """A loopback TCP port that accepts connections and never answers (a hung member), or answers
    with a drip of bytes that never ends (``drip``)."""

    def __init__(self, drip: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.drip = drip
        self.stop = threading.Event()
        self.conns = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            if self.drip:
                threading.Thread(target=self.dribble, args=(conn,), daemon=True).start()

    def dribble(self, conn) -> None:
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while not self.stop.wait(0.1):
                conn.sendall(b" ")
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def silent():
    made = []

    def make(drip=False):
        s = Silent(drip)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_all_refused_is_unavailable_at_once():
    c = EtcdClient([closed_port_url(), closed_port_url()], timeout=2)
    t0 = time.monotonic()
    with pytest.raises(EtcdUnavailable, match="Connection refused"):
        c.get(b"/k")
    assert time.monotonic() - t0 < 1.0


def test_silent_endpoints_time_out_within_the_bound(silent):
    c = EtcdClient([silent().url, silent().url, silent().url], timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(EtcdUnavailable) as info:
        c.txn([], [op_put(b"/k", b"v")], [])
    elapsed = time.monotonic() - t0
    print(f"3 silent endpoints, timeout 0.5 s: EtcdUnavailable after {elapsed:.2f} s")
    assert str(info.value).count("timed out") == 3
    assert 1.4 <= elapsed < 2.5


def test_total_timeout_caps_the_call(silent):
    c = EtcdClient([silent().url, silent().url, silent().url], timeout=1.0, total_timeout=1.2)
    t0 = time.monotonic()
    with pytest.raises(EtcdUnavailable, match="out of time"):
        c.get(b"/k")
    assert time.monotonic() - t0 < 2.0


def test_a_dripping_answer_is_cut_at_the_timeout(silent):
    """The timeout bounds the whole answer, not each read: a server sending a byte every 0.1 s
    does not keep the caller forever."""
    c = EtcdClient([silent(drip=True).url], timeout=0.7)
    t0 = time.monotonic()
    with pytest.raises(EtcdUnavailable, match="timed out"):
        c.get(b"/k")
    assert time.monotonic() - t0 < 1.3


def test_a_silent_endpoint_is_skipped_for_a_live_one(silent, etcd_single, etcd_prefix):
    c = EtcdClient([silent().url, closed_port_url()] + etcd_single.endpoints, timeout=0.5)
    c.put(etcd_prefix + b"k", b"v")
    assert c.endpoint == etcd_single.endpoints[0]
    before = c.round_trips
    assert c.get(etcd_prefix + b"k")[0] == b"v"
    assert c.round_trips - before == 1  # the endpoint that worked is tried first


# ------------------------------------------------------------------------------- failover
def member_of(cluster, url):
    return next(m for m in cluster.members if m.client_url == url)


def test_failover_when_the_member_in_use_is_killed(etcd3, etcd_prefix):
    c = EtcdClient(etcd3.endpoints, timeout=2)
    key = etcd_prefix + b"k"
    c.put(key, b"1")
    first = c.endpoint
    member_of(etcd3, first).kill()
    t0 = time.monotonic()
    ok, _, _ = c.txn([cmp_value(key, "=", b"1")], [op_put(key, b"2")], [])
    elapsed = time.monotonic() - t0
    print(f"failover after kill -9 of the member in use: {elapsed:.3f} s")
    assert ok and c.endpoint != first
    assert c.get(key)[0] == b"2"
    assert [k for k, _, _, _ in c.range_prefix(etcd_prefix)] == [key]


def _leader(cluster):
    for m in cluster.members:
        status, doc = cluster.post(m, "/v3/maintenance/status", {})
        if status == 200 and doc.get("leader") == doc.get("header", {}).get("member_id"):
            return m
    return None


def test_failover_when_the_member_in_use_hangs(etcd3, etcd_prefix):
    # The hung member is a follower: the client's failover is what is timed, not a raft election
    # (a stopped leader is the next test's case, killed).
    leader = _leader(etcd3)
    assert leader is not None
    endpoints = sorted(etcd3.endpoints, key=lambda url: url == leader.client_url)
    c = EtcdClient(endpoints, timeout=1.0)
    key = etcd_prefix + b"k"
    c.put(key, b"1")
    first = c.endpoint
    member_of(etcd3, first).pause()  # SIGSTOP: connections are accepted, nothing answers
    t0 = time.monotonic()
    c.put(key, b"2")
    elapsed = time.monotonic() - t0
    print(f"failover from a hung (SIGSTOPped) member, timeout 1 s: {elapsed:.3f} s")
    assert c.endpoint != first and c.get(key)[0] == b"2"
    assert elapsed < 1.0 * 3


def test_the_leader_killed_mid_sequence(etcd3, etcd_prefix):
    """Kill the raft leader between writes: the next writes go through once a new leader is elected
    (election timeout 500 ms here), without the caller seeing an error."""
    c = EtcdClient(etcd3.endpoints, timeout=2)
    leader = _leader(etcd3)
    assert leader is not None
    for i in range(3):
        c.put(etcd_prefix + b"%d" % i, b"v")
    leader.kill()
    t0 = time.monotonic()
    for i in range(3, 8):
        c.put(etcd_prefix + b"%d" % i, b"v")
    print(f"5 writes across a leader kill: {time.monotonic() - t0:.3f} s")
    assert len(c.range_prefix(etcd_prefix)) == 8


def test_no_quorum_is_unavailable_within_the_bound(etcd3, etcd_prefix):
    c = EtcdClient(etcd3.endpoints, timeout=1.0)
    c.put(etcd_prefix + b"k", b"v")
    etcd3.members[0].kill()
    etcd3.members[1].kill()
    t0 = time.monotonic()
    with pytest.raises(EtcdUnavailable):
        c.put(etcd_prefix + b"k", b"w")
    elapsed = time.monotonic() - t0
    print(f"one member of three left (no leader): put -> EtcdUnavailable after {elapsed:.2f} s")
    assert elapsed < 3 * 1.0 + 0.5


def test_all_members_down(etcd3, etcd_prefix):
    c = EtcdClient(etcd3.endpoints, timeout=1.0)
    c.put(etcd_prefix + b"k", b"v")
    for m in etcd3.members:
        m.kill()
    t0 = time.monotonic()
    with pytest.raises(EtcdUnavailable) as info:
        c.get(etcd_prefix + b"k")
    killed = time.monotonic() - t0
    for m in etcd3.members:
        assert m.client_url in str(info.value)
    # all hung instead of dead: each endpoint costs one timeout
    etcd3.heal()
    c.get(etcd_prefix + b"k")
    for m in etcd3.members:
        m.pause()
    t0 = time.monotonic()
    with pytest.raises(EtcdUnavailable):
        c.get(etcd_prefix + b"k")
    hung = time.monotonic() - t0
    print(f"all three members down: EtcdUnavailable after {killed:.3f} s (killed), {hung:.2f} s (hung, timeout 1 s)")
    assert killed < 0.5 and 2.8 < hung < 4.0


def test_restarted_member_serves_the_data(etcd3, etcd_prefix):
    victim = etcd3.members[2]
    victim.stop()
    writer = EtcdClient([m.client_url for m in etcd3.members[:2]])
    for i in range(20):
        writer.put(etcd_prefix + b"%02d" % i, b"v%d" % i)
    victim.start()
    etcd3.wait_ready([victim])
    reader = EtcdClient([victim.client_url])
    assert len(reader.range_prefix(etcd_prefix)) == 20  # linearizable read: caught up with the leader


# ------------------------------------------------------------------------------- TLS
def test_tls_with_a_good_client_certificate(etcd_tls, etcd_prefix):
    c = EtcdClient(etcd_tls.endpoints, **etcd_tls.client_kwargs())
    c.put(etcd_prefix + b"k", b"v")
    assert c.get(etcd_prefix + b"k")[0] == b"v"


@pytest.mark.parametrize("case", ["no client certificate", "certificate from another CA"])
def test_tls_client_certificate_refused(etcd_tls, case):
    pki = etcd_tls.pki
    kw = {"ca_file": pki.ca}
    if case != "no client certificate":
        kw.update(cert_file=pki.rogue_cert, key_file=pki.rogue_key)
    with pytest.raises(EtcdError) as info:
        EtcdClient(etcd_tls.endpoints, **kw).get(b"/k")
    assert not isinstance(info.value, EtcdUnavailable)
    assert "client certificate" in str(info.value) and etcd_tls.endpoints[0] in str(info.value)


def test_tls_server_not_trusted(etcd_tls):
    pki = etcd_tls.pki
    c = EtcdClient(etcd_tls.endpoints, ca_file=pki.rogue_ca, cert_file=pki.client_cert, key_file=pki.client_key)
    with pytest.raises(EtcdError, match="verification of the server certificate failed"):
        c.get(b"/k")


def test_tls_files_that_cannot_be_loaded(etcd_tls, tmp_path):
    pki = etcd_tls.pki
    with pytest.raises(EtcdError, match="CA file .*missing"):
        EtcdClient(etcd_tls.endpoints, ca_file=str(tmp_path / "missing")).get(b"/k")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(EtcdError, match="client certificate"):
        EtcdClient(etcd_tls.endpoints, ca_file=pki.ca, cert_file=pki.client_cert, key_file=str(junk)).get(b"/k")
    with pytest.raises(EtcdError, match="together"):
        EtcdClient(etcd_tls.endpoints, cert_file=pki.client_cert)


def test_plain_http_to_a_tls_endpoint_says_so(etcd_tls):
    url = etcd_tls.endpoints[0].replace("https://", "http://")
    with pytest.raises((EtcdUnavailable, EtcdError), match="https"):
        EtcdClient([url], timeout=1).get(b"/k")


# ------------------------------------------------------------------------------- auth
def test_auth_root_and_limited_user(etcd_auth):
    prefix = etcd_auth.limited_prefix
    root = EtcdClient(etcd_auth.endpoints, **etcd_auth.client_kwargs("root"))
    root.put(b"/outside-the-prefix", b"root was here")
    limited = EtcdClient(etcd_auth.endpoints, **etcd_auth.client_kwargs("limited"))
    limited.put(prefix + b"k", b"v")
    ok, _, _ = limited.txn([cmp_create(prefix + b"b", "=", 0)], [op_put(prefix + b"b", b"n")], [])
    assert ok and [k for k, _, _, _ in limited.range_prefix(prefix)] == [prefix + b"b", prefix + b"k"]
    for attempt in (lambda: limited.put(b"/outside-the-prefix", b"x"),
                    lambda: limited.get(b"/outside-the-prefix"),
                    lambda: limited.txn([], [op_put(prefix + b"ok", b"1"), op_put(b"/outside", b"2")], [])):
        with pytest.raises(EtcdError, match="permission denied"):
            attempt()
    assert root.get(b"/outside-the-prefix")[0] == b"root was here"
    assert limited.get(prefix + b"ok") is None  # the refused txn wrote nothing


def test_auth_wrong_password_never_shows_it(etcd_auth):
    secret = "Wr0ng-" + etcd_auth.users["limited"]
    c = EtcdClient(etcd_auth.endpoints, username="limited", password=secret)
    with pytest.raises(EtcdError) as info:
        c.get(etcd_auth.limited_prefix + b"k")
    text = str(info.value) + repr(info.value) + repr(c)
    assert "authentication" in text and "limited" in text
    assert secret not in text and etcd_auth.users["limited"] not in text


def test_auth_no_credentials_refused(etcd_auth):
    with pytest.raises(EtcdError, match="user name is empty"):
        EtcdClient(etcd_auth.endpoints).get(b"/k")


def test_auth_invalid_token_reauthenticates_once(etcd_auth):
    c = EtcdClient(etcd_auth.endpoints, **etcd_auth.client_kwargs("limited"))
    key = etcd_auth.limited_prefix + b"reauth"
    c.put(key, b"1")
    c._token = "expired.token.123"  # as after --auth-token-ttl or a member restart
    before = c.round_trips
    assert c.get(key)[0] == b"1"
    assert c.round_trips - before == 3  # refused, authenticate, repeat
    assert c._token not in (None, "expired.token.123")
    with pytest.raises(EtcdError) as info:  # a token refused twice is an error, not a loop
        c._password = "changed-" + etcd_auth.users["limited"]
        c._token = "expired.token.456"
        c.get(key)
    assert "authentication" in str(info.value)
    assert "expired.token" not in str(info.value) and etcd_auth.users["limited"] not in str(info.value)


# ------------------------------------------------------------------------------- TLS + auth
def test_tls_and_auth_with_a_certificate_without_common_name(etcd_tls_auth):
    prefix = etcd_tls_auth.limited_prefix
    c = EtcdClient(etcd_tls_auth.endpoints, **etcd_tls_auth.client_kwargs("limited"))
    c.put(prefix + b"k", b"v")
    assert c.get(prefix + b"k")[0] == b"v"
    with pytest.raises(EtcdError, match="permission denied"):
        c.put(b"/elsewhere", b"v")


def test_tls_and_auth_a_certificate_with_common_name_is_refused_by_the_gateway(etcd_tls_auth):
    """etcd 3.4's JSON gateway refuses any request whose client certificate has a CommonName while
    auth is enabled (it cannot pass the CN on as the user): a clear EtcdError quoting etcd."""
    pki = etcd_tls_auth.pki
    c = EtcdClient(etcd_tls_auth.endpoints, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key,
                   username="limited", password=etcd_tls_auth.users["limited"])
    with pytest.raises(EtcdError, match="CommonName") as info:
        c.get(etcd_tls_auth.limited_prefix + b"k")
    assert not isinstance(info.value, EtcdUnavailable)
    assert etcd_tls_auth.users["limited"] not in str(info.value)


def test_fixtures_skip_with_the_reason_without_etcd(monkeypatch):
    from tests.cluster import conftest

    monkeypatch.setattr(conftest, "ETCD", "/nonexistent/etcd")
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/etcd is missing"):
        conftest.need_etcd()
