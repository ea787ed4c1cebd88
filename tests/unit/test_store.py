"""store.py: host-local's on-disk format, the owner index and its rebuild, cursors, lock timeout."""

import fcntl
import ipaddress
import json
import os
import stat
import time

import pytest

from cni_ipam.__main__ import VERBS
from cni_ipam.plugin import netconf as config
from cni_ipam.plugin import verbs as plugin
from cni_ipam.errors import IO_FAILURE, TRY_AGAIN_LATER, CniError
from cni_ipam.plugin.skel import CniEnv
from cni_ipam.store.layout import bucket_of, index_field, owner_key, parse_ip_name, parse_owner, read_boot_id
from cni_ipam.store.snapshot import read_owner_index
from cni_ipam.store.network import NetworkStore

IP = ipaddress.ip_address
NET = "core-store"


class WatchedStore(NetworkStore):
    """The real store, watched: ``rebuilt_index`` is True when opening it rebuilt the owner index or
    caught it up with a change someone else made (the index was not trusted as it was)."""

    rebuilt_index = False

    def rebuild_index(self) -> None:
        super().rebuild_index()
        self.rebuilt_index = True

    def catch_up(self) -> bool:
        changed = super().catch_up()
        if changed:
            self.rebuilt_index = True
        return changed


def store(tmp_path, **kw):
    return WatchedStore(str(tmp_path), NET, kw.pop("timeout", 5), **kw)


def reserve(tmp_path, addr, cid="c1", ifname="eth0"):
    with store(tmp_path) as s:
        assert s.reserve(IP(addr), cid, ifname)
        s.save_owner(cid, ifname, [IP(addr)], {"created": 1})
        s.set_last_reserved(0, IP(addr))


def env(command, cid="c1", ifname="eth0"):
    return CniEnv(command, cid, "/var/run/netns/core-none", ifname, {}, "")


def call_verb(e, c):
    """A verb as skel runs it: the netconf parsed the way the verb table says, then the verb."""
    need, _ = VERBS[e.command]
    return getattr(plugin, "cmd_" + e.command.lower())(e, config.parse(c, need, e.args))


def conf(tmp_path, ranges=None):
    return {"cniVersion": "1.0.0", "name": NET,
            "ipam": {"type": "cni-ipam", "dataDir": str(tmp_path), "ranges": ranges or [[{"subnet": "10.0.0.0/24"}]]}}


def netdir(tmp_path):
    return tmp_path / NET


def test_reservation_file_format_and_mode(tmp_path):
    reserve(tmp_path, "10.0.0.5", "  cid-1 ", "eth0")
    path = netdir(tmp_path) / "10.0.0.5"
    assert path.read_bytes() == b"cid-1\r\neth0"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (netdir(tmp_path) / "last_reserved_ip.0").read_bytes() == b"10.0.0.5"
    assert (netdir(tmp_path) / "lock").exists()


def test_ipv6_file_name_is_compressed_lowercase(tmp_path):
    reserve(tmp_path, "FD00:0:0:0::A")
    assert "fd00::a" in os.listdir(netdir(tmp_path))


def test_reserve_twice_fails_and_keeps_owner(tmp_path):
    reserve(tmp_path, "10.0.0.5", "a")
    with store(tmp_path) as s:
        assert not s.reserve(IP("10.0.0.5"), "b", "eth0")
        assert s.holder(IP("10.0.0.5")) == ("a", "eth0")
    assert (netdir(tmp_path) / "10.0.0.5").read_bytes() == b"a\r\neth0"


def test_two_owners_in_one_session_keep_their_own_content(tmp_path):
    with store(tmp_path) as s:
        assert s.reserve(IP("10.0.0.5"), "a", "eth0")
        assert s.reserve(IP("10.0.0.6"), "b", "eth1")
        assert s.reserve(IP("10.0.0.7"), "a", "eth0")
    d = netdir(tmp_path)
    assert [(d / n).read_bytes() for n in ("10.0.0.5", "10.0.0.6", "10.0.0.7")] == [
        b"a\r\neth0",
        b"b\r\neth1",
        b"a\r\neth0",
    ]


def test_no_temp_files_left(tmp_path):
    reserve(tmp_path, "10.0.0.5")
    reserve(tmp_path, "10.0.0.6", "c2")
    d = netdir(tmp_path)
    assert sorted(os.listdir(d)) == [".cni-ipam", "10.0.0.5", "10.0.0.6", "last_reserved_ip.0", "lock"]
    assert os.listdir(d / ".cni-ipam" / "tmp") == []
    assert sorted(os.listdir(d / ".cni-ipam")) == ["files", "index", "state", "tmp"]
    # rollback leaves none either
    with pytest.raises(RuntimeError):
        with store(tmp_path) as s:
            s.reserve(IP("10.0.0.7"), "c3", "eth0")
            raise RuntimeError("boom")
    assert sorted(os.listdir(d)) == [".cni-ipam", "10.0.0.5", "10.0.0.6", "last_reserved_ip.0", "lock"]
    assert os.listdir(d / ".cni-ipam" / "tmp") == []


def test_a_stale_temp_file_from_a_killed_process_is_removed(tmp_path):
    reserve(tmp_path, "10.0.0.5")
    (netdir(tmp_path) / ".cni-ipam" / "tmp" / "reserve").write_bytes(b"dead\r\neth0")
    with store(tmp_path):
        pass
    assert os.listdir(netdir(tmp_path) / ".cni-ipam" / "tmp") == []


def test_rollback_removes_only_what_this_session_created(tmp_path):
    reserve(tmp_path, "10.0.0.5")
    with pytest.raises(RuntimeError):
        with store(tmp_path) as s:
            assert s.reserve(IP("10.0.0.6"), "c1", "eth0")
            s.set_last_reserved(0, IP("10.0.0.6"))
            raise RuntimeError("boom")
    assert sorted(n for n in os.listdir(netdir(tmp_path)) if parse_ip_name(n)) == ["10.0.0.5"]
    assert (netdir(tmp_path) / "last_reserved_ip.0").read_bytes() == b"10.0.0.5"


def test_last_reserved_cursor(tmp_path):
    with store(tmp_path) as s:
        assert s.last_reserved(0) is None
        s.set_last_reserved(0, IP("10.0.0.9"))
        s.set_last_reserved(1, IP("fd00::9"))
        assert s.last_reserved(0) == IP("10.0.0.9")  # pending value is visible in the session
    assert (netdir(tmp_path) / "last_reserved_ip.0").read_text() == "10.0.0.9"
    assert (netdir(tmp_path) / "last_reserved_ip.1").read_text() == "fd00::9"
    (netdir(tmp_path) / "last_reserved_ip.1").write_text("garbage")
    with store(tmp_path) as s:
        assert s.last_reserved(0) == IP("10.0.0.9")
        assert s.last_reserved(1) is None


def test_owned_by_and_release_owner(tmp_path):
    reserve(tmp_path, "10.0.0.5", "c1", "eth0")
    reserve(tmp_path, "fd00::5", "c1", "eth0")
    reserve(tmp_path, "10.0.0.6", "c1", "eth1")
    reserve(tmp_path, "10.0.0.7", "c2", "eth0")
    with store(tmp_path) as s:
        assert sorted(map(str, s.owned_by("c1", "eth0"))) == ["10.0.0.5", "fd00::5"]
        assert sorted(map(str, s.release_owner("c1", "eth0"))) == ["10.0.0.5", "fd00::5"]
        assert s.release_owner("c1", "eth0") == []
    assert sorted(n for n in os.listdir(netdir(tmp_path)) if parse_ip_name(n)) == ["10.0.0.6", "10.0.0.7"]


def test_legacy_id_only_files_are_honoured_by_del_and_check(tmp_path):
    d = netdir(tmp_path)
    os.makedirs(d)
    (d / "10.0.0.5").write_bytes(b"old-cid")
    (d / "10.0.0.6").write_bytes(b"  old-cid\n")
    (d / "10.0.0.7").write_bytes(b"other")
    assert call_verb(env("CHECK", "old-cid", "eth0"), conf(tmp_path)) is None
    with store(tmp_path) as s:
        assert sorted(map(str, s.owned_by("old-cid", "eth0"))) == ["10.0.0.5", "10.0.0.6"]
        assert s.holder(IP("10.0.0.5")) == ("old-cid", None)
    call_verb(env("DEL", "old-cid", "eth0"), conf(tmp_path))
    assert sorted(n for n in os.listdir(d) if parse_ip_name(n)) == ["10.0.0.7"]
    with pytest.raises(CniError):
        call_verb(env("CHECK", "old-cid", "eth0"), conf(tmp_path))


def test_index_is_trusted_when_nobody_else_changed_the_directory(tmp_path):
    reserve(tmp_path, "10.0.0.5")
    with store(tmp_path) as s:
        assert not s.rebuilt_index
    with store(tmp_path) as s:
        assert not s.rebuilt_index


def test_index_rebuilt_after_host_local_writes_a_file(tmp_path):
    reserve(tmp_path, "10.0.0.5")
    # host-local: O_EXCL create, write "id\r\nifname", then last_reserved_ip.<set>
    fd = os.open(netdir(tmp_path) / "10.0.0.9", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"hl-cid\r\neth0")
    os.close(fd)
    with store(tmp_path) as s:
        assert s.rebuilt_index
        assert s.owned_by("hl-cid", "eth0") == [IP("10.0.0.9")]
        assert s.owned_by("c1", "eth0") == [IP("10.0.0.5")]
        assert s.owner_entry("c1", "eth0")["meta"] == {"created": 1}  # our metadata survives a rebuild
    with store(tmp_path) as s:
        assert not s.rebuilt_index  # once
    call_verb(env("DEL", "hl-cid", "eth0"), conf(tmp_path))
    assert not (netdir(tmp_path) / "10.0.0.9").exists()


def test_index_rebuilt_after_a_foreign_delete_and_recreate(tmp_path):
    reserve(tmp_path, "10.0.0.5", "c1")
    # host-local DEL of c1, then host-local ADD of c9 that gets the same address
    os.unlink(netdir(tmp_path) / "10.0.0.5")
    (netdir(tmp_path) / "10.0.0.5").write_bytes(b"c9\r\neth0")
    call_verb(env("DEL", "c1", "eth0"), conf(tmp_path))
    assert (netdir(tmp_path) / "10.0.0.5").read_bytes() == b"c9\r\neth0"  # not c1's any more
    with store(tmp_path) as s:
        assert s.owned_by("c1", "eth0") == []
        assert s.owned_by("c9", "eth0") == [IP("10.0.0.5")]
    assert sorted(read_owner_index(str(netdir(tmp_path)))) == [owner_key("c9", "eth0")]


def test_index_rebuilt_after_a_foreign_delete_lets_add_succeed(tmp_path):
    reserve(tmp_path, "10.0.0.5", "c1")
    os.unlink(netdir(tmp_path) / "10.0.0.5")  # someone (host-local DEL) released it
    result = call_verb(env("ADD"), conf(tmp_path))
    assert [ip["address"] for ip in result["ips"]] == ["10.0.0.6/24"]


def test_index_survives_a_stale_state_file(tmp_path):
    reserve(tmp_path, "10.0.0.5")
    (netdir(tmp_path) / ".cni-ipam" / "state").write_text("{not json")
    with store(tmp_path) as s:
        assert s.rebuilt_index and s.owned_by("c1", "eth0") == [IP("10.0.0.5")]


def test_new_boot_forces_rebuild(tmp_path):
    reserve(tmp_path, "10.0.0.5")
    state_path = netdir(tmp_path) / ".cni-ipam" / "state"
    state = json.loads(state_path.read_text())
    state["boot"] = "an-older-boot"
    state_path.write_text(json.dumps(state))
    with store(tmp_path) as s:
        assert s.rebuilt_index


def test_owner_index_entries(tmp_path):
    reserve(tmp_path, "10.0.0.5", "c1", "eth0")
    entry = read_owner_index(str(netdir(tmp_path)))[owner_key("c1", "eth0")]
    st = os.stat(netdir(tmp_path) / "10.0.0.5")
    assert entry == {"containerID": "c1", "ifname": "eth0", "ips": ["10.0.0.5"], "meta": {"created": 1},
                     "files": {"10.0.0.5": [st.st_ino, st.st_ctime_ns]}, "seenBoot": read_boot_id()}
    assert owner_key("x" * 300, "eth0").startswith("sha256-")


def test_lock_timeout_gives_code_11(tmp_path):
    reserve(tmp_path, "10.0.0.5")
    fd = os.open(netdir(tmp_path) / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        began = time.monotonic()
        with pytest.raises(CniError) as info:
            with store(tmp_path, timeout=0.3):
                pass
        waited = time.monotonic() - began
    finally:
        os.close(fd)
    assert info.value.code == TRY_AGAIN_LATER and "lock" in info.value.msg
    assert 0.25 <= waited < 3
    with store(tmp_path, timeout=0.3) as s:  # released: works again
        assert s.owned_by("c1", "eth0") == [IP("10.0.0.5")]


def test_lock_is_held_for_the_whole_session(tmp_path):
    with store(tmp_path):
        fd = os.open(netdir(tmp_path) / "lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_create_false_on_a_missing_directory(tmp_path):
    with store(tmp_path, create=False) as s:
        assert not s.exists
    assert not netdir(tmp_path).exists()


def test_a_file_in_the_way_is_an_io_error(tmp_path):
    netdir(tmp_path).write_text("not a dir")
    with pytest.raises(CniError) as info:
        with store(tmp_path):
            pass
    assert info.value.code == IO_FAILURE


def test_a_symlinked_network_directory_is_refused(tmp_path):
    os.makedirs(tmp_path / "core-elsewhere")
    os.symlink(tmp_path / "core-elsewhere", netdir(tmp_path))
    with pytest.raises(CniError) as info:
        with store(tmp_path):
            pass
    assert info.value.code == IO_FAILURE
    assert os.listdir(tmp_path / "core-elsewhere") == []


def test_parse_helpers():
    assert parse_owner(b"abc\r\neth0") == ("abc", "eth0")
    assert parse_owner(b"abc\n") == ("abc", None)
    assert parse_owner(b"") is None
    assert parse_ip_name("10.0.0.1") == IP("10.0.0.1")
    assert parse_ip_name("fd00::1") == IP("fd00::1")
    for name in ("lock", "last_reserved_ip.0", ".cni-ipam", "FD00::1", "fd00:0::1", "010.0.0.1", "x"):
        assert parse_ip_name(name) is None, name


def test_clock_step_back_forces_a_rebuild(tmp_path):
    reserve(tmp_path, "10.0.0.5")
    state_path = netdir(tmp_path) / ".cni-ipam" / "state"
    state = json.loads(state_path.read_text())
    ahead = time.time_ns() + 30_000_000_000  # our last change happened 30 s "later" than now
    os.utime(netdir(tmp_path), ns=(ahead, ahead))
    (netdir(tmp_path) / "10.0.0.9").write_bytes(b"hl-cid\r\neth0")  # sets mtime to now again
    state["mtime"] = ahead
    state_path.write_text(json.dumps(state))
    with store(tmp_path) as s:
        assert s.rebuilt_index
        assert s.owned_by("hl-cid", "eth0") == [IP("10.0.0.9")]


# ---------------------------------------------------------------------- hostile disks
def bucket_file(tmp_path, cid="c1", ifname="eth0"):
    return netdir(tmp_path) / ".cni-ipam" / "index" / str(bucket_of(index_field(cid, ifname)))


def edit_line(tmp_path, edit, cid="c1", ifname="eth0"):
    """Replace the index line of (cid, ifname) with ``edit(fields)`` (fields: cid, ifname, files, tail)."""
    path = bucket_file(tmp_path, cid, ifname)
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        fields = line.split("\t")
        if fields[:2] == [cid, ifname or ""]:
            lines[i] = edit(fields)
    path.write_text("".join(line + "\n" for line in lines))


def set_tail(tmp_path, cid, ifname="eth0", **changes):
    def edit(fields):
        tail = json.loads(fields[3])
        tail.update(changes)
        return "\t".join(fields[:3] + [json.dumps(tail)])

    edit_line(tmp_path, edit, cid, ifname)


def drop_line(tmp_path, cid="c1", ifname="eth0"):
    path = bucket_file(tmp_path, cid, ifname)
    kept = [line for line in path.read_text().splitlines() if line.split("\t")[:2] != [cid, ifname or ""]]
    path.write_text("".join(line + "\n" for line in kept))


def test_catch_up_does_not_trust_the_clock(tmp_path):
    """A foreign DEL + ADD whose ctimes are older than our marker (the clock was
    behind, then stepped forward) is still seen: catch-up compares (name, inode, ctime), not times."""
    reserve(tmp_path, "10.0.0.5", "c1", "eth0")
    d = netdir(tmp_path)
    os.unlink(d / "10.0.0.5")  # host-local DEL of c1/eth0
    (d / "10.0.0.6").write_bytes(b"c1\r\neth0")  # host-local ADD of c1/eth0: same entry count
    time.sleep(2.2)
    state_path = d / ".cni-ipam" / "state"
    state = json.loads(state_path.read_text())
    state["mtime"] = time.time_ns() - 50_000_000  # marker after both ctimes (+1 s slack), not in the future
    state_path.write_text(json.dumps(state))
    with store(tmp_path) as s:
        assert s.owned_by("c1", "eth0") == [IP("10.0.0.6")]
        assert s.owner_entry("c1", "eth0")["meta"] == {}  # adopted: our metadata described the old file
        assert s.release_owner("c1", "eth0") == [IP("10.0.0.6")]
    assert not (d / "10.0.0.6").exists()


def test_catch_up_sees_a_file_replaced_under_the_same_name(tmp_path):
    """Item 3 at the store: same name, same owner, another file -> the entry loses our metadata."""
    reserve(tmp_path, "10.0.0.5", "c1", "eth0")
    d = netdir(tmp_path)
    os.unlink(d / "10.0.0.5")
    (d / "10.0.0.5").write_bytes(b"c1\r\neth0")
    with store(tmp_path) as s:
        assert s.owned_by("c1", "eth0") == [IP("10.0.0.5")]
        entry = s.owner_entry("c1", "eth0")
    st = os.stat(d / "10.0.0.5")
    assert entry["meta"] == {} and entry["files"] == {"10.0.0.5": [st.st_ino, st.st_ctime_ns]}


def test_catch_up_reads_only_what_changed(tmp_path):
    for i in range(2, 40):
        reserve(tmp_path, f"10.0.0.{i}", f"c{i}", "eth0")
    d = netdir(tmp_path)
    os.chmod(d / "10.0.0.7", 0o000)  # unreadable by nobody but root; changes its ctime only
    (d / "10.0.0.99").write_bytes(b"hl\r\neth0")
    with store(tmp_path) as s:
        assert s.rebuilt_index
        assert s.owned_by("hl", "eth0") == [IP("10.0.0.99")]
        assert s.owner_entry("c3", "eth0")["meta"] == {"created": 1}  # untouched files keep their metadata
        assert s.owner_entry("c7", "eth0")["meta"] == {}  # its inode changed (ctime): no longer provably ours


@pytest.mark.parametrize("content", [b"../../outside\r\neth0", b"/etc/passwd", b"..", b"c1\r\n../x", b"a\0b\r\neth0",
                                     b"c1\r\neth0/../x", b"\xff\xfe", b"c" * 2000])
def test_invalid_contents_are_opaque_and_never_a_name(tmp_path, content):
    """Item 4: content that is not a valid owner is kept and reported, never used to build a name."""
    reserve(tmp_path, "10.0.0.5", "c1", "eth0")
    d = netdir(tmp_path)
    (d / "10.0.0.9").write_bytes(content)
    (d / ".cni-ipam" / "state").unlink()  # force a full rebuild too
    with store(tmp_path) as s:
        found = {str(r.address): r for r in s.reservations()}
        assert found["10.0.0.9"].kind == "opaque" and found["10.0.0.9"].container_id is None
        assert s.holder(IP("10.0.0.9")) is None
        assert not s.release_reservation(found["10.0.0.9"])
        assert s.owned_by("c1", "eth0") == [IP("10.0.0.5")]
        assert not s.reserve(IP("10.0.0.9"), "c2", "eth0")  # still taken
    assert (d / "10.0.0.9").read_bytes() == content
    assert sorted(read_owner_index(str(d))) == [owner_key("c1", "eth0")]
    assert sorted(os.listdir(tmp_path)) == [NET]


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_non_regular_entries_are_never_opened_and_never_released(tmp_path, kind):
    """Item 6: a FIFO or directory named like an address is reserved by someone unknown."""
    reserve(tmp_path, "10.0.0.5", "c1", "eth0")
    d = netdir(tmp_path)
    path = d / "10.0.0.6"
    os.mkfifo(path) if kind == "fifo" else os.mkdir(path)
    for name in ("state", "files"):  # the bookkeeping files too
        (d / ".cni-ipam" / name).unlink()
        os.mkfifo(d / ".cni-ipam" / name) if kind == "fifo" else os.mkdir(d / ".cni-ipam" / name)
    c9 = bucket_file(tmp_path, "c9", "eth0")  # the bucket c9's entry would live in
    os.mkfifo(c9) if kind == "fifo" else os.mkdir(c9)
    with store(tmp_path) as s:
        found = {str(r.address): r for r in s.reservations()}
        assert found["10.0.0.6"].kind == "special"
        assert not s.release_reservation(found["10.0.0.6"])
        assert not s.reserve(IP("10.0.0.6"), "c2", "eth0")
        assert s.owned_by("c9", "eth0") == []
        assert s.release_owner("c1", "eth0") == [IP("10.0.0.5")]
    assert path.exists()


LIES = {  # the index line's fields (containerID, ifname, files, tail) -> a line that lies
    "no files": lambda f: "\t".join(f[:2] + ["", f[3]]),
    "address only": lambda f: "\t".join(f[:2] + ["10.0.0.5", f[3]]),
    "no ctime": lambda f: "\t".join(f[:2] + ["10.0.0.5 1", f[3]]),
    "not an address": lambda f: "\t".join(f[:2] + ["5 1 2", f[3]]),
    "non-canonical address": lambda f: "\t".join(f[:2] + [f[2].replace("10.0.0.5", "10.0.0.05"), f[3]]),
    "address twice": lambda f: "\t".join(f[:2] + [f[2] + "," + f[2], f[3]]),
    "negative inode": lambda f: "\t".join(f[:2] + [f[2].replace(" ", " -", 1), f[3]]),
    "tail null": lambda f: "\t".join(f[:3] + ["null"]),
    "meta not an object": lambda f: "\t".join(f[:3] + ['{"meta": [], "seenBoot": "b"}']),
    "seenBoot missing": lambda f: "\t".join(f[:3] + ['{"meta": {}}']),
    "a field too many": lambda f: "\t".join(f + ["x"]),
    "the line twice": lambda f: "\t".join(f) + "\n" + "\t".join(f[:3] + ['{"meta": {}, "seenBoot": "b"}']),
    "not utf-8": lambda f: "\t".join(f) + "\udcff",
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_an_owner_entry_that_lies_is_rebuilt_from_the_files(tmp_path, lie):
    """Item 8: ``"ips": null`` or a wrong type is discarded; the index is rebuilt from the files."""
    reserve(tmp_path, "10.0.0.5", "c1", "eth0")
    if lie == "not utf-8":
        path = bucket_file(tmp_path)
        path.write_bytes(path.read_bytes() + b"\xff\n")
    else:
        edit_line(tmp_path, LIES[lie])
    with store(tmp_path) as s:  # the marker still says "current": the lie is found on use
        assert s.owned_by("c1", "eth0") == [IP("10.0.0.5")]
        assert not s.reserve(IP("10.0.0.5"), "c2", "eth0")
    with store(tmp_path) as s:
        assert s.release_owner("c1", "eth0") == [IP("10.0.0.5")]
    assert not (netdir(tmp_path) / "10.0.0.5").exists()


def test_an_owner_entry_of_the_wrong_owner_is_not_believed(tmp_path):
    reserve(tmp_path, "10.0.0.5", "c1", "eth0")
    line = bucket_file(tmp_path).read_text()
    # c1's line copied, as c2's, into c1's bucket: c2's lookups never read that bucket, but GC
    # reads every bucket and must not believe a line that does not belong where it is
    other = next(
        c
        for c in (f"c{i}" for i in range(2, 5000))
        if bucket_of(index_field(c, "eth0")) != bucket_of(index_field("c1", "eth0"))
    )
    bad_ifname = line.replace("\teth0\t", "\teth0/..\t", 1)  # no lookup asks for it; GC must leave it out
    bucket_file(tmp_path).write_text(line + line.replace("c1\t", other + "\t", 1) + bad_ifname)
    with store(tmp_path) as s:
        assert s.owned_by("c1", "eth0") == [IP("10.0.0.5")]
        assert s.owner_entry("c1", "eth0")["containerID"] == "c1"
        assert s.owner_entry(other, "eth0") is None
        assert sorted(s.meta_owner_entries()) == [owner_key("c1", "eth0")]
    assert sorted(read_owner_index(str(netdir(tmp_path)))) == [owner_key("c1", "eth0")]


def test_seen_boot_survives_a_rebuild_only_for_the_same_file(tmp_path):
    """Item 9 (store side): ``seenBoot`` is kept across a rebuild while the file is the same file."""
    reserve(tmp_path, "10.0.0.5", "c1", "eth0")
    reserve(tmp_path, "10.0.0.6", "c2", "eth0")
    d = netdir(tmp_path)
    for cid in ("c1", "c2"):
        assert read_owner_index(str(d))[owner_key(cid, "eth0")]["seenBoot"] == read_boot_id()
        set_tail(tmp_path, cid, seenBoot="an-older-boot")
    os.unlink(d / "10.0.0.6")
    (d / "10.0.0.6").write_bytes(b"c2\r\neth0")  # another file for c2
    (d / ".cni-ipam" / "state").unlink()  # state lost: full rebuild
    with store(tmp_path) as s:
        assert s.owner_entry("c1", "eth0")["seenBoot"] == "an-older-boot"
        assert s.owner_entry("c1", "eth0")["meta"] == {"created": 1}
        assert s.owner_entry("c2", "eth0")["seenBoot"] == read_boot_id()
        assert s.owner_entry("c2", "eth0")["meta"] == {}
    drop_line(tmp_path, "c1")  # the index entry is lost: never invent an older boot
    (d / ".cni-ipam" / "state").unlink()
    with store(tmp_path) as s:
        assert s.owner_entry("c1", "eth0") == {
            "containerID": "c1", "ifname": "eth0", "ips": ["10.0.0.5"], "meta": {}, "seenBoot": read_boot_id(),
            "files": {"10.0.0.5": [os.stat(d / "10.0.0.5").st_ino, os.stat(d / "10.0.0.5").st_ctime_ns]},
        }


def test_seen_boot_is_recorded_on_adopted_entries(tmp_path):
    reserve(tmp_path, "10.0.0.5", "c1", "eth0")
    (netdir(tmp_path) / "10.0.0.9").write_bytes(b"hl\r\neth0")
    with store(tmp_path) as s:
        entry = s.owner_entry("hl", "eth0")
    assert entry["seenBoot"] == read_boot_id() and entry["meta"] == {}


def test_empty_files_are_reported_and_releasable(tmp_path):
    """Item 10 (store side): an empty file is EMPTY; GC may release it, only while still empty."""
    reserve(tmp_path, "10.0.0.5", "c1", "eth0")
    d = netdir(tmp_path)
    (d / "10.0.0.8").write_bytes(b"")
    (d / "10.0.0.9").write_bytes(b"  \r\n")
    with store(tmp_path) as s:
        found = {str(r.address): r for r in s.reservations()}
        assert found["10.0.0.8"].kind == found["10.0.0.9"].kind == "empty"
        (d / "10.0.0.9").write_bytes(b"late\r\neth0")  # host-local finished writing meanwhile
        assert s.release_reservation(found["10.0.0.8"])
        assert not s.release_reservation(found["10.0.0.9"])
    assert not (d / "10.0.0.8").exists() and (d / "10.0.0.9").exists()


def test_directories_are_0755_or_tighter_whatever_the_umask(tmp_path):
    """``dataDir`` and every parent the store creates, the network dir, .cni-ipam."""
    old = os.umask(0)
    try:
        deep = tmp_path / "a" / "b" / "data"
        with NetworkStore(str(deep), NET, 5) as s:
            s.reserve(IP("10.0.0.5"), "c1", "eth0")
    finally:
        os.umask(old)
    for path in (tmp_path / "a", tmp_path / "a" / "b", deep, deep / NET):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755, path
    for sub in ("", "index", "tmp"):
        assert stat.S_IMODE(os.stat(deep / NET / ".cni-ipam" / sub).st_mode) == 0o700


def test_gc_releases_both_links_of_a_dual_stack_attachment(tmp_path):
    """Both addresses of one ADD share an inode; releasing one changes the other's ctime, and the
    second release (judged before the first) must still go through."""
    with store(tmp_path) as s:
        assert s.reserve(IP("10.0.0.5"), "c1", "eth0") and s.reserve(IP("fd00::5"), "c1", "eth0")
        s.save_owner("c1", "eth0", [IP("10.0.0.5"), IP("fd00::5")], {"created": 1})
    with store(tmp_path) as s:
        found = s.reservations()
        assert len(found) == 2 and all(s.release_reservation(r) for r in found)
    with store(tmp_path) as s:
        assert s.reservations() == [] and s.owner_entry("c1", "eth0") is None


def test_many_foreign_changes_fold_into_the_recorded_set(tmp_path):
    """Catch-up keeps foreign changes in the state's delta and rewrites ``files`` past 128 of them;
    the index stays exact through both paths (and a junk name made of address characters)."""
    reserve(tmp_path, "10.0.0.2", "c1", "eth0")
    d = netdir(tmp_path)
    (d / "1.2.3").write_bytes(b"junk")  # address characters, not an address
    for round_ in range(3):
        for i in range(60):
            (d / f"10.0.{round_ + 1}.{i}").write_bytes(f"h{round_}x{i}\r\neth0".encode())
        os.unlink(d / f"10.0.{round_ + 1}.7")
        with store(tmp_path) as s:
            assert s.rebuilt_index
            for i in (0, 7, 59):
                want = [] if i == 7 else [IP(f"10.0.{round_ + 1}.{i}")]
                assert s.owned_by(f"h{round_}x{i}", "eth0") == want
        with store(tmp_path) as s:  # the marker is current again: no catch-up, no rebuild
            assert not s.rebuilt_index
    with store(tmp_path) as s:
        assert s.release_owner("h0x3", "eth0") == [IP("10.0.1.3")]
        assert s.owned_by("c1", "eth0") == [IP("10.0.0.2")]
