"""The owner index's own format: bucket files of lines, the rebuild that writes them in
one pass, the migration of the previous version's ``owners/`` index, and the fast paths the rebuild
uses instead of the general parsers (checked against them)."""

import ipaddress
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cni_ipam.store.layout import (
    INDEX_BUCKETS,
    bucket_of,
    content_parser,
    index_field,
    is_address_name,
    owner_key,
    parse_content,
    parse_ip_name,
    parse_line,
    read_boot_id,
)
from cni_ipam.store.network import NetworkStore
from cni_ipam.store.snapshot import read_owner_index

IP = ipaddress.ip_address
NET = "idx"


def netdir(tmp_path):
    return tmp_path / NET


def store(tmp_path):
    return NetworkStore(str(tmp_path), NET, 5)


def host_local_files(tmp_path, count, start="10.1.0.2"):
    d = netdir(tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    base = int(IP(start))
    for i in range(count):
        (d / str(IP(base + i))).write_bytes(f"hl{i}\r\neth0".encode())


def ident(path):
    st = os.stat(path)
    return [st.st_ino, st.st_ctime_ns]


def test_a_host_local_directory_is_indexed_in_few_files(tmp_path):
    host_local_files(tmp_path, 300)
    d = netdir(tmp_path)
    (d / "10.1.9.1").write_bytes(b"")  # empty
    (d / "10.1.9.2").write_bytes(b"../x\r\neth0")  # opaque
    os.mkfifo(d / "10.1.9.3")  # special
    (d / "10.1.9.4").write_bytes(b"old-id-only")  # host-local's old format
    with store(tmp_path) as s:
        assert s.owned_by("hl7", "eth0") == [IP("10.1.0.9")]
        assert s.owned_by("old-id-only", "eth9") == [IP("10.1.9.4")]
    buckets = os.listdir(d / ".cni-ipam" / "index")
    assert 100 < len(buckets) <= INDEX_BUCKETS < 301  # one file per bucket used, not one per owner
    entries = read_owner_index(str(d))
    assert len(entries) == 301 and owner_key("old-id-only", None) in entries
    assert entries[owner_key("hl7", "eth0")] == {
        "containerID": "hl7", "ifname": "eth0", "ips": ["10.1.0.9"], "meta": {},
        "files": {"10.1.0.9": ident(d / "10.1.0.9")}, "seenBoot": read_boot_id()}
    listed = (d / ".cni-ipam" / "files").read_text().splitlines()
    assert len(listed) == 1 + 304 and listed[0].startswith("snap ")
    assert f"10.1.9.3 {ident(d / '10.1.9.3')[0]} {ident(d / '10.1.9.3')[1]}" in listed
    assert os.listdir(d / ".cni-ipam" / "tmp") == []


def test_a_dual_stack_owner_is_one_line(tmp_path):
    with store(tmp_path) as s:
        assert s.reserve(IP("10.0.0.5"), "c1", "eth0") and s.reserve(IP("fd00::5"), "c1", "eth0")
        s.save_owner("c1", "eth0", [IP("10.0.0.5"), IP("fd00::5")], {"created": 1})
    (netdir(tmp_path) / ".cni-ipam" / "state").unlink()  # rebuild: the two files are grouped again
    with store(tmp_path) as s:
        entry = s.owner_entry("c1", "eth0")
        assert sorted(entry["ips"]) == ["10.0.0.5", "fd00::5"] and entry["meta"] == {"created": 1}
    text = (netdir(tmp_path) / ".cni-ipam" / "index" / str(bucket_of(index_field("c1", "eth0")))).read_text()
    assert text.count("\n") == 1 and text.startswith("c1\teth0\t")


def test_many_releases_write_each_bucket_once(tmp_path):
    host_local_files(tmp_path, 50)
    with store(tmp_path) as s:  # rebuild
        pass
    writes = []

    class Counting(NetworkStore):
        def _write_bucket(self, b, text):
            writes.append(b)
            super()._write_bucket(b, text)

    with Counting(str(tmp_path), NET, 5) as s:
        released = [r for r in s.reservations() if s.release_reservation(r)]
    assert len(released) == 50 and len(writes) == 0  # every bucket emptied: removed, not rewritten
    assert os.listdir(netdir(tmp_path) / ".cni-ipam" / "index") == []


@pytest.mark.parametrize("kind", ["dir", "symlink", "file"])
def test_an_owners_directory_is_never_read(tmp_path, kind):
    """``.cni-ipam/owners/`` was an index format that never shipped: nothing reads or follows it."""
    host_local_files(tmp_path, 2)
    d = netdir(tmp_path)
    meta = d / ".cni-ipam"
    meta.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    entry = {"containerID": "hl1", "ifname": "eth0", "ips": ["10.1.0.3"], "meta": {"netns": "/x"}, "seenBoot": "b0",
             "files": {"10.1.0.3": ident(d / "10.1.0.3")}}
    (outside / owner_key("hl1", "eth0")).write_text(json.dumps(entry))
    if kind == "dir":
        os.rename(outside, meta / "owners")
    elif kind == "symlink":
        os.symlink(outside, meta / "owners")
    else:
        (meta / "owners").write_text("x")
    with store(tmp_path) as s:
        assert s.owned_by("hl1", "eth0") == [IP("10.1.0.3")]
        assert s.owner_entry("hl1", "eth0")["meta"] == {}  # adopted from the file alone
    assert read_owner_index(str(d))[owner_key("hl1", "eth0")]["meta"] == {}
    if kind == "symlink":
        assert os.listdir(outside) == [owner_key("hl1", "eth0")]


def test_junk_in_the_index_directory_is_removed_by_a_rebuild(tmp_path):
    host_local_files(tmp_path, 2)
    index = netdir(tmp_path) / ".cni-ipam" / "index"
    index.mkdir(parents=True)
    for name in ("junk", "01", str(INDEX_BUCKETS), "-1"):
        (index / name).write_text("c1\teth0\t10.1.0.2 1 2\t{}\n")
    with store(tmp_path) as s:
        assert s.owned_by("hl0", "eth0") == [IP("10.1.0.2")]
        assert sorted(s.meta_owner_entries()) == sorted(owner_key(f"hl{i}", "eth0") for i in range(2))
    assert all(n.isdigit() and str(int(n)) == n and int(n) < INDEX_BUCKETS for n in os.listdir(index))


def test_parse_line_round_trip():
    line = "c1\teth0\t10.0.0.5 12 34,fd00::5 12 35\t" + json.dumps({"meta": {"a": 1}, "seenBoot": "b"})
    entry = parse_line(line, bucket_of("c1\teth0"))
    assert entry == {"containerID": "c1", "ifname": "eth0", "ips": ["10.0.0.5", "fd00::5"],
                     "files": {"10.0.0.5": [12, 34], "fd00::5": [12, 35]}, "meta": {"a": 1}, "seenBoot": "b"}
    assert parse_line(line, bucket_of("c1\teth0") + 1) is None  # in another owner's bucket
    assert parse_line(line.replace(" 12 34", " 1\u00b2 34"), None) is None  # not ASCII digits
    assert parse_line("c1\t\t10.0.0.5 1 2\t" + json.dumps({"meta": {}, "seenBoot": ""}))["ifname"] is None


@settings(max_examples=400, database=None, derandomize=True)
@given(st.one_of(
    st.text(alphabet="0123456789abcdef.:", max_size=20),
    st.builds(lambda a: str(IP(a)), st.integers(0, 2**32 - 1)),
    st.builds(lambda a: str(IP(a)), st.integers(0, 2**128 - 1).map(lambda v: ipaddress.IPv6Address(v))),
    st.lists(st.integers(0, 300).map(str), min_size=3, max_size=5).map(".".join),
    st.lists(st.sampled_from(["0", "00", "01", "1", "255", "256", "010", "99"]), min_size=4, max_size=4).map(".".join),
))
def test_the_fast_address_check_agrees_with_parse_ip_name(name):
    assert is_address_name(name) == (parse_ip_name(name) is not None)


@settings(max_examples=400, database=None, derandomize=True)
@given(st.one_of(
    st.binary(max_size=40),
    st.builds(lambda c, s, i: (c + s + i).encode("utf-8", "surrogatepass"),
              st.text(max_size=12), st.sampled_from(["\r\n", "\n", "", " \r\n"]),
              st.one_of(st.sampled_from(["eth0", "net1", "eth0 ", ".", "..", "a/b", "a:b", "x" * 16, "é" * 8]),
                        st.text(max_size=16))),
))
def test_the_remembering_content_parser_agrees_with_parse_content(data):
    parse = content_parser()
    assert parse(data) == parse_content(data)
    assert parse(data) == parse_content(data)  # remembered


def test_an_index_directory_removed_behind_our_back_is_rebuilt(tmp_path):
    """The state still says "current", but the index it describes is gone (an admin's clean-up)."""
    for i in range(3):
        with store(tmp_path) as s:
            assert s.reserve(IP(f"10.0.0.{5 + i}"), f"c{i}", "eth0")
            s.save_owner(f"c{i}", "eth0", [IP(f"10.0.0.{5 + i}")], {"created": i})
    index = netdir(tmp_path) / ".cni-ipam" / "index"
    for name in os.listdir(index):
        os.unlink(index / name)
    os.rmdir(index)
    with store(tmp_path) as s:
        assert s.owned_by("c1", "eth0") == [IP("10.0.0.6")]
        assert s.owner_entry("c1", "eth0")["meta"] == {}  # the metadata went with the index
        assert s.release_owner("c2", "eth0") == [IP("10.0.0.7")]
