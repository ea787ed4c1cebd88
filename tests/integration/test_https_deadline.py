"""The Kubernetes client (usePodCidr, ``pool release-node --kubeconfig``) against hostile HTTPS
endpoints (tests/hostile_http.py, TLS with the test PKI of podcidr_apiserver.py): one deadline
(``podCidr.timeout``) bounds every call whatever the server drips, and an answer that is not an API
server's is an error with a CNI code, never a traceback."""

from __future__ import annotations

import ssl

import pytest

from cni_ipam.errors import PODCIDR_UNAVAILABLE, TRY_AGAIN_LATER, CniError
from cni_ipam.podcidr import kubeapi
from tests.hostile_http import Hostile, answer, bounded
from tests.integration.podcidr_apiserver import Pki, write_kubeconfig

TIMEOUT = 0.7
SLACK = 0.6
NODE = "podcidr-node-a"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(str(tmp_path_factory.mktemp("https-deadline-pki")))


@pytest.fixture
def server_tls(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert_file, pki.server_key_file)
    return ctx


@pytest.fixture
def hostile(server_tls):
    made = []

    def make(how, **kw):
        h = Hostile(how, tls=server_tls, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def target(pki, tmp_path, url):
    kc = write_kubeconfig(str(tmp_path / "kc"), url, ca_file=pki.ca_file, token="t0ken")
    return kubeapi.from_kubeconfig(kc, str(tmp_path / "scratch"))


def get(tgt, timeout=TIMEOUT):
    return bounded(lambda: kubeapi.get_node(tgt, NODE, timeout), 10)


@pytest.mark.parametrize("how, step", [
    ("drip-status", "waiting for the status line"), ("drip-headers", "reading the headers"),
    ("drip-body", "reading the body"), ("silent", "waiting for the status line"),
])
def test_dripping_and_silent_api_servers_are_cut_at_the_deadline(pki, tmp_path, hostile, how, step):
    h = hostile(how)
    elapsed, exc, _ = get(target(pki, tmp_path, h.url))
    print(f"{how}: {elapsed:.2f} s for a {TIMEOUT} s timeout")
    assert isinstance(exc, CniError) and exc.code == TRY_AGAIN_LATER, exc
    assert f"timed out {step}" in exc.msg and h.url in exc.msg
    assert elapsed < TIMEOUT + SLACK
    assert "t0ken" not in exc.msg + exc.details


@pytest.mark.parametrize("how, code, words", [
    ("html-200", PODCIDR_UNAVAILABLE, "not JSON"),
    ("garbage", TRY_AGAIN_LATER, "not HTTP/1.x"),
])
def test_answers_that_are_not_an_api_servers(pki, tmp_path, hostile, how, code, words):
    elapsed, exc, _ = get(target(pki, tmp_path, hostile(how).url))
    assert isinstance(exc, CniError) and exc.code == code and words in exc.msg, exc


@pytest.mark.parametrize("raw, words", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{}", "two different Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", "larger than"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"kind\":", "closed the connection reading the body"),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 70000 + b"\r\n\r\n", "longer than"),
])
def test_malformed_answers_are_errors_with_a_code(pki, tmp_path, hostile, raw, words):
    elapsed, exc, _ = get(target(pki, tmp_path, hostile("raw", answer_bytes=raw).url))
    assert isinstance(exc, CniError) and exc.code in (TRY_AGAIN_LATER, PODCIDR_UNAVAILABLE), exc
    assert words in exc.msg, exc.msg


def test_chunked_and_until_close_bodies_are_read(pki, tmp_path, hostile):
    node = b'{"kind":"Node","spec":{"podCIDRs":["10.1.2.0/24"]}}'
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"%x\r\n%s\r\n" % (len(node[i:i + 7]), node[i:i + 7]) for i in range(0, len(node), 7))
               + b"0\r\nX-Trailer: 1\r\n\r\n")
    until_close = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + node
    for raw in (chunked, until_close, answer("200 OK", node)):
        _, exc, obj = get(target(pki, tmp_path, hostile("raw", answer_bytes=raw).url))
        assert exc is None and obj["spec"]["podCIDRs"] == ["10.1.2.0/24"], exc


def test_a_host_name_server_resolves(pki, tmp_path, hostile):
    """``https://localhost:port``: the name goes through the resolver thread, the certificate is
    checked against ``localhost``."""
    h = hostile("raw", answer_bytes=answer("200 OK", b'{"kind":"Node"}'))
    _, exc, obj = get(target(pki, tmp_path, h.url.replace("127.0.0.1", "localhost")), timeout=3)
    assert exc is None and obj == {"kind": "Node"}, exc
