"""Assemble the cni-ipam executable: one static file (packaging/launcher.c + a module archive).

Run by scripts/build.sh with the build interpreter: a virtual environment made from Debian's
/usr/bin/python3.11 holding the third-party packages (pyroute2, PyYAML, prometheus-client, all pure
Python).  The static runtime (--runtime, made by packaging/build_runtime.sh: CPython 3.11 from
Debian's source package with its extension modules compiled in, OpenSSL, libffi, zlib, musl) gives
the stdlib and the libraries; the build interpreter is the same CPython version, so the .pyc files
it compiles are the runtime's.

    OUT    the launcher, linked statically (no dynamic loader, no libc needed on the node), followed
           by a zip archive: the stdlib + cni_ipam + the entry modules + the third-party packages
           (with their metadata), as sourceless unchecked-hash .pyc files (optimize=1)

The launcher also carries the plugin path's modules frozen (packaging/frozen_modules.txt): a
PyImport_FrozenModules table generated here from the archive's own .pyc code, so a plugin call's
imports read nothing from the archive (--no-freeze leaves it out, for comparison).

    python build_bundle.py --out FILE --root CHECKOUT --runtime DIR [--emulator CMD] [--no-freeze]

--emulator: how to run the built executable here when it is for another architecture
(qemu-aarch64-static): the build runs it to bake its VERSION answer in and to check it.
"""

from __future__ import annotations

import argparse
import marshal
import os
import py_compile
import shutil
import subprocess
import sys
import sysconfig
import shlex
import tempfile
import zipfile

PYDIR = "python%d.%d" % sys.version_info[:2]
# Never reachable from any cni_ipam code path (nor from the third-party packages at run time).
STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "venv",
                    "site-packages", "dist-packages", "__pycache__", "lib-dynload", "pydoc_data", "curses",
                    "msilib"}
STDLIB_SKIP_FILES = {"turtle.py", "sitecustomize.py", "usercustomize.py", "this.py", "antigravity.py"}
THIRD_PARTY_SKIP = {"pip", "setuptools", "pkg_resources", "_distutils_hack", "wheel", "__pycache__"}


def compile_tree(src_root: str, dst_root: str, skip_dirs=frozenset(), skip_files=frozenset(), top_only=None) -> int:
    """Every .py under src_root as dst_root/<same path>c (sourceless .pyc); other files copied."""
    count = 0
    for dirpath, dirnames, filenames in os.walk(src_root):
        rel = os.path.relpath(dirpath, src_root)
        if rel == ".":
            if top_only is not None:
                dirnames[:] = [d for d in dirnames if top_only(d, True)]
                filenames = [f for f in filenames if top_only(f, False)]
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs and not d.startswith("config-"))
        out_dir = os.path.normpath(os.path.join(dst_root, rel))
        os.makedirs(out_dir, exist_ok=True)
        for name in sorted(filenames):
            src = os.path.join(dirpath, name)
            if name in skip_files or name.endswith((".pyc", ".pyo")):
                continue
            if name.endswith(".py"):
                # dfile: the name tracebacks show (the module's path inside the bundle, as a .py)
                py_compile.compile(src, cfile=os.path.join(out_dir, name + "c"),
                                   dfile=os.path.join(rel, name) if rel != "." else name, doraise=True, optimize=1,
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
                count += 1
            elif not os.path.islink(src) or os.path.exists(src):
                shutil.copy2(src, os.path.join(out_dir, name))
    return count


def is_elf(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"\x7fELF"


def c_string(data: bytes) -> str:
    """A C string literal holding exactly these bytes (octal escapes: no greedy hex digits)."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\?' else "\\%03o" % b for b in data) + '"'


def python_version_answer(exe: str, emulator=(), **env) -> bytes:
    """What the executable prints for CNI_COMMAND=VERSION (exit 0 required)."""
    proc = subprocess.run([*emulator, exe], env={"CNI_COMMAND": "VERSION", **env}, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=120)
    if proc.returncode != 0 or b"supportedVersions" not in proc.stdout:
        raise SystemExit(f"build_bundle: {exe} does not answer VERSION: {proc.returncode} {proc.stdout!r} "
                         f"{proc.stderr!r}")
    return proc.stdout


def read_module_list(path: str) -> list:
    """Module names, one a line; '#' starts a comment."""
    with open(path, encoding="utf-8") as fh:
        names = [line.split("#", 1)[0].strip() for line in fh]
    return [n for n in names if n]


def write_frozen_table(pylib: str, names, header: str) -> int:
    """A C header defining ``cni_ipam_frozen``, a PyImport_FrozenModules table (struct _frozen, 3.11) holding
    the code objects of the named modules: exactly the marshalled code of the bundle's own .pyc files (the
    16-byte header dropped), so frozen and file code cannot differ.  Returns the bytes of code frozen."""
    if sys.version_info[:2] != (3, 11):
        raise SystemExit("build_bundle: the frozen table is laid out for CPython 3.11's struct _frozen")
    arrays, rows, total = [], [], 0
    for i, name in enumerate(names):
        rel = os.path.join(pylib, *name.split("."))
        for path, is_pkg in ((os.path.join(rel, "__init__.pyc"), 1), (rel + ".pyc", 0)):  # noqa: B007
            if os.path.isfile(path):
                break
        else:
            raise SystemExit(f"build_bundle: {name} (packaging/frozen_modules.txt) is not a .pyc module of the archive")
        with open(path, "rb") as fh:
            data = fh.read()
        # magic, flags (1: hash-based, unchecked), source hash; then the marshalled code object
        if data[:4] != importlib_magic() or int.from_bytes(data[4:8], "little") != 1:
            raise SystemExit(f"build_bundle: {path} is not an unchecked-hash .pyc of this Python")
        code = data[16:]
        marshal.loads(code)  # must be a whole code object
        total += len(code)
        body = ",".join(str(b) for b in code)
        arrays.append(f"static const unsigned char frozen_{i}[{len(code)}] = {{{body}}};\n")
        rows.append(f'    {{"{name}", frozen_{i}, {len(code)}, {is_pkg}, NULL}},\n')
    with open(header, "w", encoding="ascii") as fh:
        fh.write("/* generated by packaging/build_bundle.py from packaging/frozen_modules.txt: do not edit */\n")
        fh.writelines(arrays)
        fh.write("static const struct _frozen cni_ipam_frozen[] = {\n")
        fh.writelines(rows)
        fh.write("    {NULL, NULL, 0, 0, NULL},\n};\n")
    return total


def importlib_magic() -> bytes:
    import importlib.util
    return importlib.util.MAGIC_NUMBER


def build_launcher(root: str, runtime: str, out_exe: str, defines=()) -> None:
    """Compile and link packaging/launcher.c statically against the runtime (its bin/cc: gcc + musl)."""
    src = os.path.join(root, "packaging", "launcher.c")
    pyver = "python%d.%d" % sys.version_info[:2]
    lib = os.path.join(runtime, "lib")
    with open(os.path.join(runtime, "link-libs"), encoding="ascii") as fh:
        libs = fh.read().split()
    cflags = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
              f"-I{os.path.join(runtime, 'include', pyver)}", *defines]
    # -static: no PT_INTERP, no DT_NEEDED (nothing of the node is used); unused sections dropped; stripped.
    argv = [os.path.join(runtime, "bin", "cc"), "-static", *cflags, "-o", out_exe, src,
            os.path.join(lib, f"lib{pyver}.a"), f"-L{lib}", *libs, "-lssl", "-lcrypto", "-lffi", "-lz", "-lm",
            "-Wl,--gc-sections", "-Wl,-O1", "-s"]
    subprocess.run(argv, check=True)


def write_archive(tree: str, path: str) -> int:
    """Every file under tree into a new zip archive at path (sorted, fixed timestamps); returns the count."""
    count = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for dirpath, dirnames, filenames in os.walk(tree):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                info = zipfile.ZipInfo(os.path.relpath(full, tree), date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with open(full, "rb") as fh:
                    zf.writestr(info, fh.read())
                count += 1
    return count


def append_archive(exe: str, archive: str) -> None:
    """exe := exe + archive.  The archive's offsets stay relative to its own start: zipimport and zipfile
    find the end-of-archive record at the end of the file and allow for the bytes before it, as for a
    self-extracting archive."""
    with open(exe, "ab") as out, open(archive, "rb") as src:
        shutil.copyfileobj(src, out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the executable to make")
    ap.add_argument("--root", required=True, help="the checkout (cni_ipam/ and packaging/)")
    ap.add_argument("--runtime", required=True, help="the static runtime (packaging/build_runtime.sh --out)")
    ap.add_argument("--emulator", default="", help="command that runs the built executable here (cross builds)")
    ap.add_argument("--no-fast-version", action="store_true", help="leave VERSION to Python (no answer baked in)")
    ap.add_argument("--no-freeze", action="store_true",
                    help="leave the plugin path's modules in the archive (no frozen table; for comparison)")
    ap.add_argument("--entry", default=os.path.join("packaging", "cni_ipam_entry.py"),
                    help="the entry script, relative to --root (installed as the module cni_ipam_entry)")
    args = ap.parse_args(argv)

    if sys.prefix == sys.base_prefix:
        raise SystemExit("build_bundle: run me with the build virtual environment's python, not the machine's")
    runtime = os.path.abspath(args.runtime)
    runtime_stdlib = os.path.join(runtime, "lib", PYDIR)
    if not os.path.isdir(runtime_stdlib):
        raise SystemExit(f"build_bundle: {runtime_stdlib} missing: not a runtime of this Python ({PYDIR})")
    emulator = shlex.split(args.emulator)
    out = os.path.abspath(args.out)
    with tempfile.TemporaryDirectory(prefix="cni-ipam-build-") as tmp:
        pylib = os.path.join(tmp, "modules")
        os.makedirs(pylib)

        # 1. the stdlib of the runtime we link (its extension modules are built in)
        n_std = compile_tree(runtime_stdlib, pylib, STDLIB_SKIP_DIRS, STDLIB_SKIP_FILES)

        # 2. the third-party packages of the build venv (with their metadata: importlib.metadata finds it);
        #    compiled extensions (PyYAML's optional _yaml) are left out: the pure-Python code is used.
        site = sysconfig.get_paths()["purelib"]
        n_third = compile_tree(site, pylib, top_only=lambda name, is_dir: (
            name.split("-")[0] not in THIRD_PARTY_SKIP and not name.endswith(".pth")
            and not name.startswith(("pip-", "setuptools-", "_distutils_hack"))))
        for dirpath, _, filenames in os.walk(pylib):
            for name in filenames:
                if ".so" in name and is_elf(os.path.join(dirpath, name)):
                    os.unlink(os.path.join(dirpath, name))

        # 3. cni_ipam and the entry modules, from the checkout
        n_own = compile_tree(os.path.join(args.root, "cni_ipam"), os.path.join(pylib, "cni_ipam"), {"__pycache__"})
        for src, mod in ((args.entry, "cni_ipam_entry"),
                         (os.path.join("packaging", "cni_ipam_fastjson.py"), "cni_ipam_fastjson"),
                         (os.path.join("packaging", "_sqlite3.py"), "_sqlite3")):  # pyroute2 imports sqlite3
            py_compile.compile(os.path.join(args.root, src), cfile=os.path.join(pylib, mod + ".pyc"),
                               dfile=mod + ".py", doraise=True, optimize=1,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        archive = os.path.join(tmp, "modules.zip")
        n_files = write_archive(pylib, archive)

        # 4. the launcher (twice: the second one with the VERSION answer of the first), then the archive
        exe = os.path.join(tmp, "cni-ipam")
        defines, n_frozen, names = [], 0, []
        if not args.no_freeze:
            names = read_module_list(os.path.join(args.root, "packaging", "frozen_modules.txt"))
            header = os.path.join(tmp, "frozen_modules.h")
            n_frozen = write_frozen_table(pylib, names, header)
            defines.append(f'-DFROZEN_MODULES="{header}"')
        build_launcher(args.root, runtime, exe, defines)
        append_archive(exe, archive)
        if not args.no_fast_version:
            answer = python_version_answer(exe, emulator)
            build_launcher(args.root, runtime, exe, [*defines, f"-DVERSION_ANSWER={c_string(answer)}"])
            append_archive(exe, archive)
            if (python_version_answer(exe, emulator) != answer
                    or python_version_answer(exe, emulator, CNI_IPAM_LIST_MODULES="1") != answer):
                raise SystemExit("build_bundle: the launcher's VERSION answer differs from the Python path's")
        os.chmod(exe, 0o755)
        shutil.move(exe, out)
    print(f"build_bundle: {out}: {os.path.getsize(out) // 1024} KiB; {n_std} stdlib, {n_third} third-party, "
          f"{n_own} cni_ipam modules ({n_files} files in the archive); {len(names)} frozen into the launcher "
          f"({n_frozen} bytes of code)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
