"""Run the plugin (``cni_ipam.__main__.main``) with crash injection.  Test-only; not part of the plugin.

Every file-system mutation the plugin makes through the ``os`` module (open for writing, write,
link, rename, replace, unlink, mkdir, rmdir, utime, fsync, ftruncate, symlink, chmod) is counted.

* ``REL_KILL_AT=N``  - SIGKILL this process just before the N-th mutation (``REL_SIGNAL=STOP``
  sends SIGSTOP instead, leaving the process frozen inside its critical section).
* ``REL_OPS_LOG=path`` - append the name of each mutation to ``path`` (used to count them).

Because the wrapper patches the ``os`` functions, the kill lands between two real system calls of
the real code: every state the disk can be in after a crash is reached, with no hook in the core.
"""

import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

_KILL_AT = int(os.environ.pop("REL_KILL_AT", "0") or 0)
_SIG = signal.SIGSTOP if os.environ.pop("REL_SIGNAL", "") == "STOP" else signal.SIGKILL
_LOG = os.environ.pop("REL_OPS_LOG", "")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_count = 0
_log = []


def _hit(name):
    global _count
    _count += 1
    if _LOG:
        _log.append(name)
    if _count == _KILL_AT:
        os.kill(os.getpid(), _SIG)


def _wrap(name):
    real = getattr(os, name)

    if name == "open":
        def wrapper(path, flags, *args, **kwargs):
            if flags & _WRITE_FLAGS:
                _hit(f"open:{os.path.basename(str(path))}")
            return real(path, flags, *args, **kwargs)
    else:
        def wrapper(*args, **kwargs):
            label = name
            if args and isinstance(args[0], (str, bytes)):
                label = f"{name}:{os.path.basename(os.fsdecode(args[0]))}"
            _hit(label)
            return real(*args, **kwargs)

    setattr(os, name, wrapper)


for _name in ("open", "write", "link", "rename", "replace", "unlink", "remove", "mkdir", "rmdir",
              "utime", "fsync", "fdatasync", "ftruncate", "truncate", "symlink", "chmod", "fchmod"):
    if hasattr(os, _name):
        _wrap(_name)


def _main():
    from cni_ipam.__main__ import main

    try:
        return main()
    finally:
        if _LOG:
            with open(_LOG, "a", encoding="utf-8") as fh:
                fh.write("".join(f"{n}\n" for n in _log))


if __name__ == "__main__":
    sys.exit(_main())
