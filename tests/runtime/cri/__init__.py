"""The test side of the CRI: our own ``cri_api.proto`` compiled with grpcio-tools into a temp dir
(never into the checkout), and the sandbox ("pause") image built from ``pause.c``."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = "cri_api.proto"


def grpc_missing() -> "str | None":
    try:
        import grpc  # type: ignore[import-untyped]  # noqa: F401
        import grpc_tools  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return "grpcio / grpcio-tools missing (pip install -e '.[test]')"
    return None


def load_api(out_dir: str) -> "tuple[types.ModuleType, types.ModuleType]":
    """Compile ``cri_api.proto`` into ``out_dir`` and import it: (messages, stubs)."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    os.makedirs(out_dir, exist_ok=True)
    shutil.copy(os.path.join(HERE, PROTO), out_dir)  # protoc names modules after the file's path under -I
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{out_dir}", f"-I{include}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}", os.path.join(out_dir, PROTO)])
    if rc != 0:
        raise RuntimeError(f"protoc failed ({rc}) on {PROTO}")
    sys.path.insert(0, out_dir)
    try:
        for name in ("cri_api_pb2", "cri_api_pb2_grpc"):
            sys.modules.pop(name, None)
        pb2 = importlib.import_module("cri_api_pb2")
        grpc_mod = importlib.import_module("cri_api_pb2_grpc")
    finally:
        sys.path.remove(out_dir)
    return pb2, grpc_mod


def build_pause(out_dir: str) -> str:
    """A static pause binary in ``out_dir/rootfs/pause``; returns the root filesystem."""
    rootfs = os.path.join(out_dir, "rootfs")
    os.makedirs(os.path.join(rootfs, "dev"), exist_ok=True)
    for sub in ("proc", "sys", "etc", "tmp"):
        os.makedirs(os.path.join(rootfs, sub), exist_ok=True)
    subprocess.run(["gcc", "-static", "-Os", "-s", "-o", os.path.join(rootfs, "pause"), os.path.join(HERE, "pause.c")],
                   check=True, capture_output=True, timeout=120)
    return rootfs
