"""The etcd client against endpoints that are not well-behaved etcd members (tests/hostile_http.py:
real loopback servers), beside real etcd: every call bounded by its deadline whatever the endpoint
drips, an answer that is not etcd's is that endpoint failing (the next one answers; with none left a
clear EtcdError, never a TypeError), and the client's TLS files are configuration, checked at once."""

from __future__ import annotations

import os
import ssl
import time

import pytest

from cni_ipam.cluster import etcd as etcd_mod
from cni_ipam.cluster.etcd import EtcdClient, EtcdError, EtcdUnavailable, cmp_create, op_get, op_put
from tests.hostile_http import Hostile, bounded

TIMEOUT = 0.7
SLACK = 0.6  # thread start, loopback, a loaded CI machine


@pytest.fixture
def hostile():
    made = []

    def make(how, **kw):
        h = Hostile(how, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


DRIPS = {  # how -> the step the deadline stops
    "drip-status": "waiting for the status line",
    "drip-headers": "reading the headers",
    "drip-body": "reading the body",
    "silent": "waiting for the status line",
}


# ------------------------------------------------------------------------------- deadlines
@pytest.mark.parametrize("how", sorted(DRIPS))
def test_a_dripping_or_silent_endpoint_costs_at_most_the_timeout(hostile, how):
    """main: http.client re-armed the socket timeout at every recv of the status line and the headers,
    so a byte every 0.1 s held the call (and an ADD with the network lock) forever."""
    h = hostile(how)
    c = EtcdClient([h.url], timeout=TIMEOUT)
    elapsed, exc, _ = bounded(lambda: c.get(b"/k"), 10)
    print(f"{how}: {type(exc).__name__} after {elapsed:.2f} s (timeout {TIMEOUT} s)")
    assert isinstance(exc, EtcdUnavailable), exc
    assert f"timed out {DRIPS[how]}" in str(exc) and h.url in str(exc)
    assert elapsed < TIMEOUT + SLACK
    assert h.requests == 1


@pytest.mark.parametrize("how", sorted(DRIPS))
def test_a_dripping_endpoint_fails_over_to_etcd(hostile, etcd_single, etcd_prefix, how):
    h = hostile(how)
    c = EtcdClient([h.url] + etcd_single.endpoints, timeout=TIMEOUT)
    key = etcd_prefix + b"k"
    elapsed, exc, rev = bounded(lambda: c.put(key, b"v"), 10)
    assert exc is None, exc
    assert c.endpoint == etcd_single.endpoints[0] and c.get(key) == (b"v", rev)
    assert elapsed < TIMEOUT + SLACK


def test_total_timeout_bounds_a_call_over_dripping_endpoints(hostile):
    urls = [hostile(how).url for how in ("drip-status", "drip-headers", "drip-body")]
    c = EtcdClient(urls, timeout=TIMEOUT, total_timeout=1.0)
    elapsed, exc, _ = bounded(lambda: c.txn([], [op_put(b"/k", b"v")], []), 10)
    assert isinstance(exc, EtcdUnavailable) and "not tried (out of time)" in str(exc), exc
    assert elapsed < 1.0 + SLACK


def test_a_dripping_tls_endpoint_is_bounded_and_fails_over(hostile, etcd_tls, etcd_prefix):
    """The same drip behind TLS (ssl reads re-arm their timeout too): one deadline."""
    pki = etcd_tls.pki
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.server_cert, pki.server_key)
    h = hostile("drip-headers", tls=server)
    alone = EtcdClient([h.url], **etcd_tls.client_kwargs())
    alone.timeout = TIMEOUT
    elapsed, exc, _ = bounded(lambda: alone.get(b"/k"), 10)
    assert isinstance(exc, EtcdUnavailable) and "timed out reading the headers" in str(exc), exc
    assert elapsed < TIMEOUT + SLACK
    c = EtcdClient([h.url] + etcd_tls.endpoints, timeout=TIMEOUT, **etcd_tls.client_kwargs())
    elapsed, exc, _ = bounded(lambda: c.put(etcd_prefix + b"k", b"v"), 10)
    assert exc is None and c.endpoint == etcd_tls.endpoints[0], exc
    assert elapsed < TIMEOUT + SLACK


# ------------------------------------------------------------------------------- not etcd
NOT_ETCD = ["json-200", "html-200", "garbage", "json-404", "bad-types"]


@pytest.mark.parametrize("how", NOT_ETCD)
def test_an_endpoint_that_is_not_etcd_fails_over_to_etcd(hostile, etcd_single, etcd_prefix, how):
    """main took a 200 with foreign JSON as etcd's answer (get: None, txn: failed compare), a 404
    without etcd's error shape as etcd refusing, and wrong types as a TypeError (CNI 999)."""
    h = hostile(how)
    c = EtcdClient([h.url] + etcd_single.endpoints, timeout=TIMEOUT)
    key = etcd_prefix + b"k"
    EtcdClient(etcd_single.endpoints).put(key, b"in etcd")
    assert c.get(key)[0] == b"in etcd"
    assert c.endpoint == etcd_single.endpoints[0] and h.requests == 1
    c._current = 0  # every call starts at the endpoint that answered last: make it the bad one again
    ok, responses, rev = c.txn([cmp_create(key, "!=", 0)], [op_get(key)], [op_get(key)])
    assert ok and responses[0]["kvs"][0][1] == b"in etcd" and rev > 0
    assert c.last_header[1] >= rev and h.requests == 2


@pytest.mark.parametrize("how", NOT_ETCD)
def test_only_endpoints_that_are_not_etcd_is_a_clear_error(hostile, how):
    h = hostile(how)
    c = EtcdClient([h.url, hostile(how).url], timeout=TIMEOUT)
    calls = [lambda: c.get(b"/k"), lambda: c.txn([], [op_put(b"/k", b"v")], [op_get(b"/k")]),
             lambda: c.range_prefix(b"/")]
    if how != "bad-types":  # etcd's header with kvs of the wrong type: only calls that read kvs can tell
        calls += [lambda: c.put(b"/k", b"v"), lambda: c.delete(b"/k")]
    for call in calls:
        with pytest.raises(EtcdError) as info:  # never TypeError/KeyError, never a made-up answer
            call()
        text = str(info.value)
        assert "is this an etcd client URL?" in text and h.url in text, text
        assert not text.startswith("etcd:")
    assert c.last_header == (0, 0)


def test_a_kept_alive_connection_is_reused_and_the_foreign_one_dropped(hostile, etcd_single, etcd_prefix):
    h = hostile("json-200")
    c = EtcdClient([h.url] + etcd_single.endpoints)
    c.put(etcd_prefix + b"k", b"v")
    conn = c._conn[1]
    assert c._conn[0] == 1 and conn.sock is not None
    for _ in range(3):
        c.get(etcd_prefix + b"k")
    assert c._conn[1] is conn and h.requests == 1


# ------------------------------------------------------------------------------- name resolution
def test_a_host_name_is_resolved(etcd_single, etcd_prefix):
    """``localhost`` takes the resolver thread (an IP literal never does); ::1 may refuse first."""
    port = etcd_single.endpoints[0].rsplit(":", 1)[1]
    c = EtcdClient([f"http://localhost:{port}"], timeout=2)
    c.put(etcd_prefix + b"k", b"v")
    assert c.get(etcd_prefix + b"k")[0] == b"v"


@pytest.mark.parametrize("host", ["no-such-host.invalid", "a..b"])
def test_a_name_that_does_not_resolve_is_unavailable(host):
    """A name IDNA cannot encode raised UnicodeError out of getaddrinfo: never a 999."""
    c = EtcdClient([f"http://{host}:2379"], timeout=2)
    elapsed, exc, _ = bounded(lambda: c.get(b"/k"), 10)
    assert isinstance(exc, EtcdUnavailable) and f"cannot resolve {host}" in str(exc), exc


# ------------------------------------------------------------------------------- TLS files
def config_error():
    """etcd_mod.EtcdConfigError (looked up here: main has none, and this file must still import)."""
    return getattr(etcd_mod, "EtcdConfigError", None) or pytest.fail("no EtcdConfigError in cni_ipam.cluster.etcd")


@pytest.mark.parametrize("which", ["ca_file", "cert_file", "key_file"])
def test_a_missing_tls_file_is_a_configuration_error_at_once(etcd_tls, tmp_path, which):
    """main read the files on the first request and reported "etcd: cannot load ..." as a failed
    request (the pool mapped it to 11, try again); now the constructor refuses, naming the file."""
    kw = etcd_tls.client_kwargs()
    missing = str(tmp_path / f"missing-{which}.pem")
    kw[which] = missing
    with pytest.raises(config_error()) as info:
        EtcdClient(etcd_tls.endpoints, **kw)
    text = str(info.value)
    assert missing in text and "No such file" in text and not text.startswith("etcd:"), text
    assert not isinstance(info.value, EtcdUnavailable)


def test_tls_files_that_are_not_regular_or_not_pem(etcd_tls, tmp_path):
    kw = etcd_tls.client_kwargs()
    fifo = str(tmp_path / "ca-fifo")
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(config_error(), match=f"CA file {fifo} is not a regular file"):
        EtcdClient(etcd_tls.endpoints, **dict(kw, ca_file=fifo))
    assert time.monotonic() - t0 < 1  # refused, never waited on
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(config_error(), match="CA file"):
        EtcdClient(etcd_tls.endpoints, **dict(kw, ca_file=str(junk)))
    with pytest.raises(config_error(), match=f"client certificate .* key {junk}"):
        EtcdClient(etcd_tls.endpoints, **dict(kw, key_file=str(junk)))


def test_tls_files_are_not_read_for_plain_http_endpoints(etcd_single, etcd_prefix, tmp_path):
    c = EtcdClient(etcd_single.endpoints, ca_file=str(tmp_path / "never-read.pem"))
    c.put(etcd_prefix + b"k", b"v")


# ------------------------------------------------------------------------------- through the plugin
def test_a_missing_ca_file_is_invalid_config_not_try_again(etcd_tls, etcd_prefix, tmp_path):
    """main: "etcd: cannot load the CA file ..." came from the first request, and the pool mapped it
    to 11 (try again later) as if etcd were down; the client now refuses it when made: code 7."""
    from tests.cluster.poolkit import call, pool_conf

    conf = pool_conf(etcd_tls, etcd_prefix, "node-a", str(tmp_path / "data"))
    missing = str(tmp_path / "no-such-ca.pem")
    conf["ipam"]["pool"]["etcd"]["caFile"] = missing
    rc, out = call("ADD", conf, "hostile-ca")
    assert rc == 1 and out["code"] == 7 and missing in out["msg"], out
    assert "etcd: etcd" not in out["msg"]


def test_a_dripping_endpoint_listed_first_does_not_hold_an_add(hostile, etcd_single, etcd_prefix, tmp_path):
    """An ADD whose first etcd endpoint drips its headers: main held it (and the network lock)
    for as long as the drip lasted; now it costs one timeout, then etcd answers."""
    from tests.cluster.poolkit import call, pool_conf

    h = hostile("drip-headers")
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", str(tmp_path / "data"))
    conf["ipam"]["pool"]["etcd"]["endpoints"] = [h.url] + etcd_single.endpoints
    conf["ipam"]["pool"]["etcd"]["timeout"] = 1.0
    t0 = time.monotonic()
    rc, out = call("ADD", conf, "hostile-drip", timeout=30)
    elapsed = time.monotonic() - t0
    print(f"ADD with a dripping first endpoint (timeout 1 s): {elapsed:.2f} s")
    assert rc == 0 and out["ips"], out
    assert h.requests >= 1 and elapsed < 1.0 * h.requests + 5
