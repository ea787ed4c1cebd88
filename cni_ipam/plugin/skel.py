"""The CNI protocol boundary: environment, stdin, version negotiation, errors and output.

Plugin logic never repeats any of this: stdin is decoded once, the version negotiated, the network
name validated and the netconf parsed once (``plugin.netconf.parse``) into what the verb needs;
verbs get a validated ``CniEnv`` and that parsed netconf, and return a result dict (or None); every
failure leaves here as CNI error JSON and exit 1.  The verbs are handed in by the entry point
(``cni_ipam.__main__.VERBS``: command -> (what it needs of the netconf, the verb)), as CNI's
``pkg/skel`` is given its functions: the boundary imports no verb.

VERSION loads nothing beyond this module and ``cni_ipam.errors``: the name rules
(``cni_ipam.store``) and ``netconf`` are imported when a call needs them, and there is no ``from
__future__ import annotations`` here (an import of its own; the few annotations that name what
this module does not import are strings).
"""

import json
import os
import sys

from cni_ipam.errors import (
    DECODING_FAILURE,
    INCOMPATIBLE_VERSION,
    INTERNAL,
    INVALID_CONFIG,
    INVALID_ENV,
    CniError,
)

TYPE_CHECKING = False  # a plain constant: the plugin path does not import typing
if TYPE_CHECKING:
    from collections.abc import Mapping

SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"
VERBS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
_MAX_STDIN = 16 << 20


class CniEnv:
    """The CNI_* environment of one call, validated."""

    __slots__ = ("command", "container_id", "netns", "ifname", "args", "path")

    def __init__(
        self, command: str, container_id: str, netns: str, ifname: str, args: dict[str, str], path: str
    ) -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args = args
        self.path = path


def version_tuple(version: str) -> tuple:
    return tuple(int(p) for p in version.split("."))


def validate_container_id(value: str) -> None:
    from cni_ipam.store import is_container_id

    if not value:
        raise CniError(INVALID_ENV, "required env variable CNI_CONTAINERID missing", "CNI_CONTAINERID")
    if not is_container_id(value):
        raise CniError(INVALID_ENV, "invalid characters in CNI_CONTAINERID", value[:256])


def validate_ifname(value: str) -> None:
    """As libcni's ValidateInterfaceName: 1-15 bytes, not . or .., no '/', ':' or whitespace."""
    from cni_ipam.store import ifname_problem

    problem = ifname_problem(value)
    if problem == "missing":
        raise CniError(INVALID_ENV, "required env variable CNI_IFNAME missing", "CNI_IFNAME")
    if problem == "too long":
        raise CniError(INVALID_ENV, "interface name is too long (CNI_IFNAME, at most 15 bytes)", value[:64])
    if problem == "dot":
        raise CniError(INVALID_ENV, "interface name is . or .. (CNI_IFNAME)", value)
    if problem == "bad char":
        raise CniError(INVALID_ENV, "interface name contains / or : or whitespace (CNI_IFNAME)", value)
    if problem:
        raise CniError(INVALID_ENV, "interface name is not valid UTF-8 (CNI_IFNAME)", repr(value))


def validate_network_name(value: object) -> str:
    from cni_ipam.store import is_cni_name

    if value in (None, ""):
        raise CniError(INVALID_CONFIG, "missing network name", "key name")
    if not isinstance(value, str) or not is_cni_name(value) or len(value) > 200:
        raise CniError(INVALID_CONFIG, f"invalid characters found in network name {value!r}", "key name")
    return value


def read_env(environ: "Mapping[str, str]") -> CniEnv:
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise CniError(INVALID_ENV, "required env variable CNI_COMMAND missing", "CNI_COMMAND")
    if command not in VERBS:
        raise CniError(INVALID_ENV, f"unknown CNI_COMMAND: {command!r}", "CNI_COMMAND")
    env = CniEnv(
        command=command,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        args={},
        path=environ.get("CNI_PATH", ""),
    )
    if command in ("ADD", "DEL", "CHECK"):
        missing = [
            name
            for name, value, needed in (
                ("CNI_CONTAINERID", env.container_id, True),
                ("CNI_NETNS", env.netns, command != "DEL"),
                ("CNI_IFNAME", env.ifname, True),
            )
            if needed and not value
        ]
        if missing:
            raise CniError(INVALID_ENV, f"required env variables [{','.join(missing)}] missing", ",".join(missing))
        validate_container_id(env.container_id)
        validate_ifname(env.ifname)
        from cni_ipam.plugin.netconf import parse_cni_args

        env.args = parse_cni_args(environ.get("CNI_ARGS", ""))
    return env


def read_config(stdin: bytes) -> dict:
    try:
        conf = json.loads(stdin.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CniError(DECODING_FAILURE, f"cannot decode the network config on stdin: {exc}", "stdin") from None
    if not isinstance(conf, dict):
        raise CniError(DECODING_FAILURE, "the network config on stdin is not a JSON object", "stdin")
    return conf


def negotiate(conf: dict, command: str) -> str:
    from cni_ipam.plugin.netconf import network_version

    version = network_version(conf)
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f"config is {version!r}, plugin supports {list(SUPPORTED_VERSIONS)}",
        )
    if command == "CHECK" and version_tuple(version) < (0, 4, 0):
        raise CniError(
            INCOMPATIBLE_VERSION, f"config version {version} does not allow CHECK (needs 0.4.0 or later)", "cniVersion"
        )
    if command in ("GC", "STATUS") and version_tuple(version) < (1, 1, 0):
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"config version {version} does not allow {command} (needs 1.1.0 or later)",
            "cniVersion",
        )
    return version


def run(environ: "Mapping[str, str]", stdin: bytes, verbs: dict, decoded: "list | None" = None) -> "dict | None":
    """One plugin call: returns the JSON to print (or None) or raises CniError.

    ``verbs`` maps ADD, DEL, CHECK, GC and STATUS to ``(need, verb)``: ``need`` says what the verb
    needs of the netconf ("full", "ref" or "gc", see ``plugin.netconf``) and ``verb(env, netconf)``
    runs it (as CNI's skel is given its functions): this module never imports the verbs.  The
    decoded config is appended to ``decoded`` (when given) for the error path."""
    env = read_env(environ)
    if env.command == "VERSION":
        return {"cniVersion": CURRENT_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}
    conf = read_config(stdin)
    if decoded is not None:
        decoded.append(conf)
    version = negotiate(conf, env.command)
    conf["name"] = validate_network_name(conf.get("name"))
    need, verb = verbs[env.command]
    from cni_ipam.plugin import netconf

    return verb(env, netconf.parse(conf, need, env.args, version))


def _error_version(stdin: bytes, decoded: list) -> str:
    """The cniVersion of the error JSON: the config's when it is one we speak."""
    if decoded:
        version = decoded[0].get("cniVersion")
    else:  # the call failed before stdin was decoded (e.g. a missing CNI_* variable)
        try:
            version = json.loads(stdin.decode("utf-8")).get("cniVersion")
        except Exception:
            return CURRENT_VERSION
    return version if version in SUPPORTED_VERSIONS else CURRENT_VERSION


def plugin_main(verbs: dict, environ: "Mapping[str, str] | None" = None, stdin: "bytes | None" = None, out=None) -> int:
    """The whole plugin process: read env and stdin, run the verb, print the result or the CNI error."""
    if environ is None:
        environ = os.environ
    out = sys.stdout if out is None else out
    data = b""
    decoded: list = []
    try:
        if stdin is None:
            if environ.get("CNI_COMMAND") == "VERSION":
                data = b""
            else:
                data = sys.stdin.buffer.read(_MAX_STDIN + 1)
                if len(data) > _MAX_STDIN:
                    raise CniError(
                        DECODING_FAILURE, f"network config on stdin is larger than {_MAX_STDIN} bytes", "stdin"
                    )
        else:
            data = stdin
        result = run(environ, data, verbs, decoded)
        if result is not None:
            out.write(json.dumps(result, indent=4) + "\n")
        out.flush()
        return 0
    except CniError as exc:
        err = exc
    except MemoryError:
        err = CniError(INTERNAL, "out of memory", "")
    except Exception as exc:  # a bug: report it as CNI error JSON, never a traceback
        err = CniError(INTERNAL, f"internal error: {type(exc).__name__}: {exc}", "please report this")
    try:
        out.write(json.dumps(err.to_json(_error_version(data, decoded)), indent=4) + "\n")
        out.flush()
    except Exception:
        pass
    return 1
