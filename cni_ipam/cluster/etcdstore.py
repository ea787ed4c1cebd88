"""The fenced etcd transactions of a cluster pool, one round trip each.

Every txn that hands out or frees something compares the exact bytes of a value this node wrote
(``cmp_value``): a claim's bytes hold a random claim id, so they never repeat, not even after etcd
was restored from a backup (revisions do repeat then).  A txn that fails reads, in its failure
branch, the keys it compared, so the caller learns why in the same round trip.

Every method raises ``CniError`` 11 when etcd cannot be reached in time; the outcome of the txn
is then unknown (it may have been applied: a lost or late answer) and callers must treat it so.
A refusal is configuration, not an outage, and raises 7 with the client's message: authentication
failed, permission denied, a TLS refusal, no endpoint that answers as etcd (``EtcdError``; the
client already sorted etcd's "cannot serve now" answers into ``EtcdUnavailable``).  Retrying such
an ADD cannot succeed until someone fixes the conf or etcd's users.
"""

from __future__ import annotations

from cni_ipam.cluster import keys
from cni_ipam.errors import INVALID_CONFIG, TRY_AGAIN_LATER, CniError

TXN_OPS = 100  # etcd allows 128 operations per txn by default (--max-txn-ops)


class EtcdStore:
    def __init__(self, settings, pool: str, observer=None) -> None:
        """``settings``: a ``cluster.config.EtcdSettings``; ``observer``: called with etcd's
        (cluster id, revision) after every answer (the record's restore detection)."""
        self.settings = settings
        self.pool = pool
        self.prefix = settings.prefix
        self.observer = observer
        self._client = None

    # ------------------------------------------------------------------ connection
    @property
    def round_trips(self) -> int:
        return self._client.round_trips if self._client is not None else 0

    def header(self) -> tuple[int, int]:
        """(cluster id, revision) of etcd's last answer; (0, 0) before any."""
        return self._client.last_header if self._client is not None else (0, 0)

    def client(self):
        if self._client is None:
            from cni_ipam.cluster import etcd  # only calls that need etcd pay for the import

            s = self.settings
            password = None
            if s.password_file:
                try:
                    with open(s.password_file, "rb") as fh:
                        password = fh.read(4096).decode("utf-8").strip()
                except (OSError, UnicodeDecodeError) as exc:
                    raise CniError(INVALID_CONFIG, f"cannot read ipam.pool.etcd.passwordFile {s.password_file}: {exc}",
                                   "key ipam.pool.etcd.passwordFile") from None
            try:
                self._client = etcd.EtcdClient(s.endpoints, ca_file=s.ca_file, cert_file=s.cert_file,
                                               key_file=s.key_file, username=s.username, password=password,
                                               timeout=s.timeout)
            except etcd.EtcdError as exc:
                raise CniError(INVALID_CONFIG, f"pool {self.pool}: etcd client: {exc}", "key ipam.pool.etcd") from None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass

    def _do(self, what: str, fn):
        client = self.client()
        from cni_ipam.cluster.etcd import EtcdError, EtcdUnavailable

        try:
            out = fn(client)
        except EtcdUnavailable as exc:
            raise CniError(TRY_AGAIN_LATER, f"pool {self.pool}: etcd unreachable while {what}: {exc}",
                           ", ".join(self.settings.endpoints)) from None
        except EtcdError as exc:
            # A compaction racing a paged read (the client retries it once) is the one refusal that passes.
            code = TRY_AGAIN_LATER if "compacted" in str(exc) else INVALID_CONFIG
            raise CniError(code, f"pool {self.pool}: etcd refused {what}: {exc}",
                           "key ipam.pool.etcd: " + ", ".join(self.settings.endpoints)) from None
        if self.observer is not None:
            self.observer(client.last_header)
        return out

    def _txn(self, what: str, compares: list, success: list, failure: list) -> tuple[bool, list]:
        ok, responses, _rev = self._do(what, lambda c: c.txn(compares, success, failure))
        return ok, responses

    # ------------------------------------------------------------------ keys
    def block_key(self, cidr: str) -> bytes:
        return keys.block_key(self.prefix, self.pool, cidr)

    def addr_key(self, family: int, value: int) -> bytes:
        return keys.addr_key(self.prefix, self.pool, family, value)

    def node_key(self, node: str) -> bytes:
        return keys.node_key(self.prefix, self.pool, node)

    # ------------------------------------------------------------------ reads
    def get(self, key: bytes) -> bytes | None:
        got = self._do("reading a key", lambda c: c.get(key))
        return None if got is None else got[0]

    def claims(self) -> dict[str, bytes]:
        """Every claimed block of the pool: cidr -> claim value."""
        out = {}
        head = keys.blocks_prefix(self.prefix, self.pool)
        for key, value, _mod, _create in self._do("listing blocks", lambda c: c.range_prefix(head)):
            cidr = keys.parse_block_key(self.prefix, self.pool, key)
            if cidr is not None:
                out[cidr] = value
        return out

    # ------------------------------------------------------------------ identity and grid
    def create_node(self, node: str, value: bytes) -> bytes | None:
        """Create ``nodes/<node>`` with ``value`` if absent.  None when it now holds ``value``,
        else what it holds (another machine's identity)."""
        from cni_ipam.cluster.etcd import cmp_create, op_get, op_put

        key = self.node_key(node)
        ok, resp = self._txn(f"registering node {node}", [cmp_create(key, "=", 0)], [op_put(key, value)], [op_get(key)])
        if ok:
            return None
        kvs = resp[0].get("kvs") or []
        have = kvs[0][1] if kvs else b""
        return None if have == value else have

    def put_node(self, node: str, old: bytes, new: bytes) -> bool:
        from cni_ipam.cluster.etcd import cmp_value, op_put

        key = self.node_key(node)
        return self._txn(f"updating node {node}", [cmp_value(key, "=", old)], [op_put(key, new)], [])[0]

    def delete_node(self, node: str, value: bytes) -> bool:
        from cni_ipam.cluster.etcd import cmp_value, op_delete

        key = self.node_key(node)
        return self._txn(f"removing node {node}", [cmp_value(key, "=", value)], [op_delete(key)], [])[0]

    def ensure_grid(self, family: int, size: int) -> int:
        """The pool's block size of ``family``, pinned to ``size`` when no grid key exists.  A
        missing grid key is re-created from the existing claims of the family, if any: never a
        size that would let new claims overlap old ones.  -1 when existing claims disagree."""
        from cni_ipam.cluster.etcd import cmp_create, op_put

        key = keys.grid_key(self.prefix, self.pool, family)
        have = self.get(key)
        if have is not None:
            return int(have) if have.isdigit() else -1
        head = keys.blocks_prefix(self.prefix, self.pool)
        found = set()
        for k, _v, _m, _c in self._do("listing blocks", lambda c: c.range_prefix(head, keys_only=True)):
            cidr = keys.parse_block_key(self.prefix, self.pool, k)
            if cidr is not None and (":" in cidr) == (family == 6):
                found.add(int(cidr.rsplit("/", 1)[1]))
        if len(found) > 1:
            return -1
        pinned = found.pop() if found else size
        ok, _ = self._txn("creating the block grid", [cmp_create(key, "=", 0)], [op_put(key, str(pinned).encode())], [])
        if ok:
            return pinned
        have = self.get(key)
        return int(have) if have is not None and have.isdigit() else -1

    # ------------------------------------------------------------------ blocks
    def claim_block(self, cidr: str, family: int, size: int, claim: bytes, node: str, node_value: bytes,
                    spec: bytes) -> tuple[bool, bytes | None, bytes | None, bytes | None]:
        """Create the block's claim if absent, the grid says ``size`` and ``nodes/<node>`` holds
        ``node_value``.  (ok, block value, grid value, node value) with the reads of a failure."""
        from cni_ipam.cluster.etcd import cmp_create, cmp_value, op_get, op_put

        key, grid, nkey = self.block_key(cidr), keys.grid_key(self.prefix, self.pool, family), self.node_key(node)
        ok, resp = self._txn(f"claiming block {cidr}",
                             [cmp_create(key, "=", 0), cmp_value(grid, "=", str(size).encode()),
                              cmp_value(nkey, "=", node_value)],
                             [op_put(key, claim), op_put(keys.spec_key(self.prefix, self.pool), spec)],
                             [op_get(key), op_get(grid), op_get(nkey)])
        if ok:
            return True, claim, None, None
        block, grid_v, node_v = (_value(r) for r in resp)
        return False, block, grid_v, node_v

    def release_block(self, cidr: str, claim: bytes) -> tuple[bool, bytes | None]:
        """Delete the claim if it still holds ``claim`` and no address record lies in the block;
        (ok, the block's value when not)."""
        from cni_ipam.cluster.etcd import cmp_value, cmp_version, op_delete, op_get

        key = self.block_key(cidr)
        start, end = keys.block_addr_range(self.prefix, self.pool, cidr)
        ok, resp = self._txn(f"releasing block {cidr}", [cmp_value(key, "=", claim), cmp_version(start, "=", 0, end)],
                             [op_delete(key)], [op_get(key)])
        return ok, (None if ok else _value(resp[0]))

    def put_claim(self, cidr: str, old: bytes | None, new: bytes) -> tuple[bool, bytes | None]:
        """Replace the claim ``old`` by ``new`` (a renamed node), or create it when ``old`` is None
        and the key is absent (re-asserting a claim a restore lost)."""
        from cni_ipam.cluster.etcd import cmp_create, cmp_value, op_get, op_put

        key = self.block_key(cidr)
        cmp = cmp_create(key, "=", 0) if old is None else cmp_value(key, "=", old)
        ok, resp = self._txn(f"moving block {cidr}", [cmp], [op_put(key, new)], [op_get(key)])
        return ok, (new if ok else _value(resp[0]))

    # ------------------------------------------------------------------ addresses
    def create_addr(self, cidr: str, claim: bytes, family: int, value: int,
                    record: bytes) -> tuple[bool, bytes | None, bytes | None]:
        """Create the address's record if absent while the block holds ``claim``: the one etcd
        write of an ADD.  (ok, block value, address value) with the reads of a failure."""
        from cni_ipam.cluster.etcd import cmp_create, cmp_value, op_get, op_put

        bkey, akey = self.block_key(cidr), self.addr_key(family, value)
        ok, resp = self._txn(f"recording address in block {cidr}",
                             [cmp_value(bkey, "=", claim), cmp_create(akey, "=", 0)],
                             [op_put(akey, record)], [op_get(bkey), op_get(akey)])
        if ok:
            return True, claim, record
        return False, _value(resp[0]), _value(resp[1])

    def delete_addr(self, family: int, value: int, record: bytes) -> tuple[bool, bytes | None]:
        """Delete the address's record if it holds ``record``; (ok, its value when not)."""
        from cni_ipam.cluster.etcd import cmp_value, op_delete, op_get

        akey = self.addr_key(family, value)
        ok, resp = self._txn("removing an address record", [cmp_value(akey, "=", record)], [op_delete(akey)],
                             [op_get(akey)])
        return ok, (None if ok else _value(resp[0]))


def _value(resp: dict) -> bytes | None:
    kvs = resp.get("kvs") or []
    return kvs[0][1] if kvs else None
