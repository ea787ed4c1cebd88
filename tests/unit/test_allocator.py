"""allocator.py over a real NetworkStore in tmp_path: policy, requested IPs, errors and atomicity."""

import ipaddress
import os

import pytest

from cni_ipam.plugin import allocator
from cni_ipam.plugin import netconf as config
from cni_ipam.errors import (
    DUPLICATE_ALLOCATION,
    RANGE_EXHAUSTED,
    REQUESTED_IP_INVALID,
    REQUESTED_IP_TAKEN,
    CniError,
)
from cni_ipam.store.network import NetworkStore

IP = ipaddress.ip_address
NET = "core-alloc"


def cfg_of(data_dir, ranges, **extra):
    ipam = {"type": "cni-ipam", "dataDir": str(data_dir), "ranges": ranges}
    ipam.update(extra)
    return config.load({"cniVersion": "1.0.0", "name": NET, "ipam": ipam}, {})


def add(data_dir, cfg, cid="c1", ifname="eth0", requested=()):
    """What cmd_add does: allocate and record the owner under one store session."""
    with NetworkStore(str(data_dir), NET, 5) as store:
        ips = allocator.allocate(store, cfg.range_sets, [IP(r) for r in requested], cid, ifname)
        store.save_owner(cid, ifname, [i.ip for i, _ in ips], {})
    return [(str(i), str(g) if g is not None else None) for i, g in ips]


def add_err(data_dir, cfg, **kw):
    with pytest.raises(CniError) as info:
        add(data_dir, cfg, **kw)
    return info.value


def delete(data_dir, cid="c1", ifname="eth0"):
    with NetworkStore(str(data_dir), NET, 5) as store:
        return [str(a) for a in store.release_owner(cid, ifname)]


def files(data_dir):
    """Reservation files: {address: content}."""
    d = os.path.join(str(data_dir), NET)
    out = {}
    for name in os.listdir(d):
        try:
            ipaddress.ip_address(name)
        except ValueError:
            continue
        with open(os.path.join(d, name), "rb") as fh:
            out[name] = fh.read().decode()
    return out


def cursor(data_dir, idx=0):
    path = os.path.join(str(data_dir), NET, f"last_reserved_ip.{idx}")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return fh.read()


def test_round_robin_allocation(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/29"}]])
    got = [add(tmp_path, cfg, cid=f"c{i}")[0][0] for i in range(3)]
    assert got == ["10.0.0.2/29", "10.0.0.3/29", "10.0.0.4/29"]
    assert cursor(tmp_path) == "10.0.0.4"
    assert delete(tmp_path, "c0") == ["10.0.0.2"]
    # round robin: the freed .2 comes back only after .5 and .6
    assert [add(tmp_path, cfg, cid=f"d{i}")[0][0] for i in range(3)] == ["10.0.0.5/29", "10.0.0.6/29", "10.0.0.2/29"]
    assert add_err(tmp_path, cfg, cid="full").code == RANGE_EXHAUSTED


def test_result_carries_prefix_and_gateway_of_the_range(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.10"},
                             {"subnet": "10.0.8.0/22", "gateway": "10.0.11.254"}],
                            [{"subnet": "fd00::/64", "gateway": "fd00::ffff"}]])
    assert add(tmp_path, cfg, cid="a") == [("10.0.0.10/24", "10.0.0.1"), ("fd00::1/64", "fd00::ffff")]
    assert add(tmp_path, cfg, cid="b") == [("10.0.8.1/22", "10.0.11.254"), ("fd00::2/64", "fd00::ffff")]


def test_excluded_addresses_are_skipped(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/28", "exclude": ["10.0.0.2/31"]}]], exclude=["10.0.0.5"])
    got = [add(tmp_path, cfg, cid=f"c{i}")[0][0] for i in range(4)]
    assert got == ["10.0.0.4/28", "10.0.0.6/28", "10.0.0.7/28", "10.0.0.8/28"]
    assert not {"10.0.0.2", "10.0.0.3", "10.0.0.5"} & set(files(tmp_path))


def test_taken_addresses_are_skipped(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/29"}]])
    os.makedirs(tmp_path / NET)
    (tmp_path / NET / "10.0.0.2").write_bytes(b"other\r\neth0")
    assert add(tmp_path, cfg)[0][0] == "10.0.0.3/29"
    assert files(tmp_path)["10.0.0.2"] == "other\r\neth0"


def test_requested_ip_is_honoured_and_recorded(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]])
    assert add(tmp_path, cfg, requested=["fd00::99", "10.0.0.77"]) == [
        ("10.0.0.77/24", "10.0.0.1"),
        ("fd00::99/64", "fd00::1"),
    ]
    assert files(tmp_path) == {"10.0.0.77": "c1\r\neth0", "fd00::99": "c1\r\neth0"}
    assert cursor(tmp_path, 0) == "10.0.0.77" and cursor(tmp_path, 1) == "fd00::99"
    # the next automatic address follows the requested one (host-local moves its cursor too)
    assert add(tmp_path, cfg, cid="c2")[0][0] == "10.0.0.78/24"


def test_requested_ip_for_one_set_other_set_automatic(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]])
    assert add(tmp_path, cfg, requested=["fd00::5"]) == [("10.0.0.2/24", "10.0.0.1"), ("fd00::5/64", "fd00::1")]


def test_requested_gateway_is_rejected(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/24", "gateway": "10.0.0.254"}]])
    err = add_err(tmp_path, cfg, requested=["10.0.0.254"])
    assert err.code == REQUESTED_IP_INVALID and "10.0.0.254" in err.msg and "gateway" in err.msg
    assert files(tmp_path) == {}


@pytest.mark.parametrize("addr", ["10.0.0.9", "10.0.0.0"])
def test_requested_excluded_or_network_address_is_rejected(tmp_path, addr):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.0", "exclude": ["10.0.0.8/30"]}]])
    err = add_err(tmp_path, cfg, requested=[addr])
    assert err.code == REQUESTED_IP_INVALID and addr in err.msg
    assert files(tmp_path) == {}


def test_requested_ip_outside_every_set(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.100"}]])
    err = add_err(tmp_path, cfg, requested=["10.0.0.50"])
    assert err.code == REQUESTED_IP_INVALID and "10.0.0.50" in err.msg
    assert files(tmp_path) == {} and cursor(tmp_path) is None


def test_requested_ip_taken(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/24"}]])
    add(tmp_path, cfg, cid="owner", requested=["10.0.0.30"])
    err = add_err(tmp_path, cfg, cid="thief", requested=["10.0.0.30"])
    assert err.code == REQUESTED_IP_TAKEN and "10.0.0.30" in err.msg and "owner" in err.details
    assert files(tmp_path) == {"10.0.0.30": "owner\r\neth0"}


def test_duplicate_allocation(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/24"}]])
    add(tmp_path, cfg)
    err = add_err(tmp_path, cfg)
    assert err.code == DUPLICATE_ALLOCATION and "10.0.0.2" in err.msg and "c1" in err.msg
    assert files(tmp_path) == {"10.0.0.2": "c1\r\neth0"}
    # another interface of the same container is a different attachment
    assert add(tmp_path, cfg, ifname="eth1")[0][0] == "10.0.0.3/24"


def test_duplicate_allocation_of_legacy_id_only_file(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/24"}]])
    os.makedirs(tmp_path / NET)
    (tmp_path / NET / "10.0.0.40").write_bytes(b"c1")
    err = add_err(tmp_path, cfg)
    assert err.code == DUPLICATE_ALLOCATION and "10.0.0.40" in err.msg


def test_exhaustion(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/30"}]])  # one usable address: .2
    assert add(tmp_path, cfg, cid="a")[0][0] == "10.0.0.2/30"
    err = add_err(tmp_path, cfg, cid="b")
    assert err.code == RANGE_EXHAUSTED and "10.0.0.2" in err.msg
    assert cursor(tmp_path) == "10.0.0.2"


def test_dual_stack_failure_in_second_set_leaves_nothing_of_the_first(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/126"}]])  # v6: fd00::2 only
    pre = add(tmp_path, cfg, cid="c1", ifname="eth1")  # the same container's other interface
    assert pre == [("10.0.0.2/24", "10.0.0.1"), ("fd00::2/126", "fd00::1")]
    before_cursor = cursor(tmp_path, 0)
    err = add_err(tmp_path, cfg, cid="c1", ifname="eth0")
    assert err.code == RANGE_EXHAUSTED
    assert files(tmp_path) == {"10.0.0.2": "c1\r\neth1", "fd00::2": "c1\r\neth1"}
    assert cursor(tmp_path, 0) == before_cursor == "10.0.0.2"
    assert os.listdir(tmp_path / NET / ".cni-ipam" / "tmp") == []
    with NetworkStore(str(tmp_path), NET) as store:
        assert [str(a) for a in store.owned_by("c1", "eth1")] == ["10.0.0.2", "fd00::2"]
        assert store.owned_by("c1", "eth0") == []


def test_dual_stack_failure_keeps_a_pre_existing_reservation_of_the_same_attachment(tmp_path):
    v6_only = cfg_of(tmp_path, [[{"subnet": "fd00::/64"}]])
    add(tmp_path, v6_only, cid="c1", ifname="eth0")
    both = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]])
    err = add_err(tmp_path, both, cid="c1", ifname="eth0")
    assert err.code == DUPLICATE_ALLOCATION and "fd00::2" in err.msg
    # host-local would release fd00::2 here too; we release only what this ADD took (10.0.0.2)
    assert files(tmp_path) == {"fd00::2": "c1\r\neth0"}
    with NetworkStore(str(tmp_path), NET) as store:
        assert [str(a) for a in store.owned_by("c1", "eth0")] == ["fd00::2"]


def test_unfulfilled_request_rolls_back_the_sets(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/24"}]])
    err = add_err(tmp_path, cfg, requested=["10.9.9.9"])
    assert err.code == REQUESTED_IP_INVALID and "10.9.9.9" in err.msg
    assert files(tmp_path) == {} and cursor(tmp_path) is None


def test_two_requests_in_one_set_take_the_first(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/24"}]])
    err = add_err(tmp_path, cfg, requested=["10.0.0.5", "10.0.0.6"])
    assert err.code == REQUESTED_IP_INVALID and "10.0.0.6" in err.msg
    assert files(tmp_path) == {}


def test_round_robin_across_ranges_of_one_set_on_disk(tmp_path):
    cfg = cfg_of(tmp_path, [[{"subnet": "10.0.0.0/30"}, {"subnet": "10.0.1.0/30"}]])
    got = [add(tmp_path, cfg, cid=f"c{i}")[0] for i in range(2)]
    assert got == [("10.0.0.2/30", "10.0.0.1"), ("10.0.1.2/30", "10.0.1.1")]
    delete(tmp_path, "c0")
    assert add(tmp_path, cfg, cid="c2")[0] == ("10.0.0.2/30", "10.0.0.1")
