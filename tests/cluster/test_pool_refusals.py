"""What a pool ADD answers when etcd refuses rather than fails to answer: a refusal is
configuration (CNI code 7, "invalid config", with the etcd client's message), only unavailability
is code 11 ("try again later").  Real etcd with authentication (tests/cluster/conftest.py), real
endpoints that are not etcd (tests/hostile_http.py), real plugin processes."""

from __future__ import annotations

import socket
import uuid

import pytest

from tests.cluster.poolkit import call, pool_conf, reservations
from tests.hostile_http import Hostile


@pytest.fixture
def auth_conf(etcd_auth, tmp_path):
    """A pool conf for user ``limited`` under its granted prefix; the password file holds ``password``."""
    pw = tmp_path / "etcd-password"

    def make(password: str, prefix: bytes | None = None):
        pw.write_text(password + "\n")
        prefix = prefix or etcd_auth.limited_prefix + uuid.uuid4().hex[:8].encode() + b"/"
        d = str(tmp_path / f"node-{uuid.uuid4().hex[:6]}")
        conf = pool_conf(etcd_auth, prefix, "node-a", d, block=29)
        conf["ipam"]["pool"]["etcd"].update({"username": "limited", "passwordFile": str(pw)})
        return conf, d

    return make


def test_wrong_password_is_invalid_config(etcd_auth, auth_conf):
    secret = "Wr0ng-" + uuid.uuid4().hex[:8]
    conf, d = auth_conf(secret)
    rc, res = call("ADD", conf, "c0")
    assert rc == 1 and res["code"] == 7, res
    assert "authentication as user 'limited' failed" in res["msg"] and "pool p" in res["msg"], res
    assert secret not in res["msg"] + res.get("details", "")
    assert reservations(d) == {}
    conf, d = auth_conf(etcd_auth.users["limited"])  # the right one: the same conf works
    rc, res = call("ADD", conf, "c1")
    assert rc == 0, res


def test_permission_denied_is_invalid_config(etcd_auth, auth_conf):
    conf, d = auth_conf(etcd_auth.users["limited"], prefix=b"/elsewhere/" + uuid.uuid4().hex[:8].encode() + b"/")
    rc, res = call("ADD", conf, "c0")
    assert rc == 1 and res["code"] == 7 and "permission denied" in res["msg"], res
    assert reservations(d) == {}


@pytest.mark.parametrize("how", ["json-200", "html-200", "json-404"])
def test_an_endpoint_that_is_not_etcd_is_invalid_config(etcd_prefix, tmp_path, how):
    class Nowhere:  # pool_conf wants a cluster: only its endpoints and client arguments
        def __init__(self, url):
            self.endpoints = [url]

        def client_kwargs(self):
            return {}

    with Hostile(how) as h:
        d = str(tmp_path / "node-a")
        conf = pool_conf(Nowhere(h.url), etcd_prefix, "node-a", d, block=28)
        rc, res = call("ADD", conf, "c0")
    assert rc == 1 and res["code"] == 7, res
    assert "is this an etcd client URL?" in res["msg"] and h.url in res["msg"], res
    assert res["msg"].count(h.url) == 1, res["msg"]


def test_an_endpoint_that_does_not_answer_is_try_again(etcd_prefix, tmp_path):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    class Closed:
        endpoints = [f"http://127.0.0.1:{port}"]

        def client_kwargs(self):
            return {}

    conf = pool_conf(Closed(), etcd_prefix, "node-a", str(tmp_path / "node-a"), block=28)
    rc, res = call("ADD", conf, "c0")
    assert rc == 1 and res["code"] == 11, res
