"""cni_ipam.admin.runtimes without a runtime: spec parsing and the rules that make an answer usable."""

import os

import pytest

from cni_ipam.admin import liveness
from cni_ipam.admin import runtimes


@pytest.mark.parametrize("text, expected", [
    ("containerd", runtimes.RuntimeSpec("containerd", socket=runtimes.DEFAULT_CONTAINERD_SOCKET)),
    ("containerd:/x/c.sock", runtimes.RuntimeSpec("containerd", socket="/x/c.sock")),
    ("podman", runtimes.RuntimeSpec("podman")),
    ("podman:/r", runtimes.RuntimeSpec("podman", root="/r")),
    ("podman:/r:/rr", runtimes.RuntimeSpec("podman", root="/r", runroot="/rr")),
    ("podman-api", runtimes.RuntimeSpec("podman-api", socket=runtimes.DEFAULT_PODMAN_SOCKET)),
])
def test_parse_spec(text, expected):
    assert runtimes.parse_spec(text) == expected


@pytest.mark.parametrize("text", ["docker", "crio:/x", "containerd:rel.sock", "podman:rel", "podman:/r:rel", ""])
def test_parse_spec_rejects(text):
    with pytest.raises(ValueError):
        runtimes.parse_spec(text)


def test_missing_socket_or_root_proves_nothing(tmp_path):
    ids, name, answers = runtimes.evidence([f"containerd:{tmp_path}/none.sock"])
    assert ids is None and not answers[0].ok and "does not exist" in answers[0].error
    ids, name, answers = runtimes.evidence([f"podman:{tmp_path}/no-root"])
    assert ids is None and "not a directory" in answers[0].error
    assert not os.path.exists(tmp_path / "no-root")  # never creates an empty store


def test_podman_api_socket_that_does_not_answer_proves_nothing(tmp_path):
    ids, _, answers = runtimes.evidence([f"podman-api:{tmp_path}/p.sock"], timeout=2)
    assert ids is None and "podman API" in answers[0].error


def test_one_unanswered_runtime_voids_all_evidence(tmp_path, monkeypatch):
    good = runtimes.RuntimeAnswer(runtimes.parse_spec("podman"), ids=frozenset({"a"}), containers=1)
    bad = runtimes.RuntimeAnswer(runtimes.parse_spec("containerd"), error="down")
    answers = iter([good, bad])
    monkeypatch.setattr(runtimes, "query", lambda spec, timeout: next(answers))
    ids, name, got = runtimes.evidence(["podman", "containerd"])
    assert ids is None and name == "podman + containerd:/run/containerd/containerd.sock" and got == [good, bad]


def test_checker_uses_runtime_ids_after_the_namespace_rules(tmp_path):
    now = 10_000.0
    entry = {"containerID": "gone", "ifname": "eth0", "meta": {"created": 1.0, "bootId": "b"}}
    checker = liveness.Checker(
        now=now, grace=0, boot_id="b", boot_time=0.0, runtime_ids={"other"}, runtime_name="podman"
    )
    verdict = checker.classify(entry, network="n")
    assert (verdict.state, verdict.reason) == ("stranded", "not-in-runtime") and "podman" in verdict.detail
    assert checker.classify(dict(entry, containerID="other"), network="n").state == "live"
    # an alive, unchanged namespace wins over the runtime's answer (its address is still on an interface)
    ns = tmp_path / "ns"
    ns.write_text("")
    st = os.stat(ns)
    alive = dict(entry, meta=dict(entry["meta"], netns=str(ns), netnsDev=st.st_dev, netnsIno=st.st_ino))
    assert checker.classify(alive, network="n").state == "live"
    # not asked: no runtime evidence
    assert liveness.Checker(now=now, grace=0, boot_id="b", boot_time=0.0).classify(entry, network="n").state == "live"
