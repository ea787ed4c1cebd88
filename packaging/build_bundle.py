"""Assemble the self-contained cni-ipam bundle around packaging/launcher.c (no PyInstaller).

Run by scripts/build.sh with the build interpreter: a virtual environment made from Debian's
/usr/bin/python3.11 holding the third-party packages (pyroute2, PyYAML, prometheus-client).  The
bundle embeds that same CPython - the static libpython of the python3.11-dev package - so the
stdlib, the extension modules and the packages below all come from one Python build:

    OUT/cni-ipam                          the launcher (packaging/launcher.c), libpython linked in
    OUT/_internal/lib/*.so*               shared libraries the extension modules need (ldd), glibc's excepted
    OUT/_internal/lib/python3.11/         stdlib + cni_ipam + the entry module + third-party packages,
                                          as sourceless .pyc files (no source to stat, nothing to validate)
    OUT/_internal/lib/python3.11/lib-dynload/   the stdlib's extension modules

The launcher also carries the plugin path's modules frozen (packaging/frozen_modules.txt): a
PyImport_FrozenModules table generated here from the bundle's own .pyc code, so a plugin call's
imports open no file (--no-freeze leaves it out, for comparison).

    python build_bundle.py --out DIR --root CHECKOUT [--link static|pie|shared] [--cc gcc] [--no-freeze]

--link: static (default) links libpython3.11.a into a non-PIE executable, as Debian links its own
/usr/bin/python3.11; pie links libpython3.11-pic.a into a PIE; shared bundles libpython3.11.so.1.0
and finds it through the same $ORIGIN rpath (both for comparison, see docs/performance.md).
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
import tempfile

PYDIR = "python%d.%d" % sys.version_info[:2]
# Never reachable from any cni_ipam code path (nor from the third-party packages at run time).
STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "venv",
                    "site-packages", "dist-packages", "__pycache__", "lib-dynload", "pydoc_data"}
STDLIB_SKIP_FILES = {"turtle.py", "sitecustomize.py", "usercustomize.py", "this.py", "antigravity.py"}
# Extension modules left out: test modules, and interactive/terminal or obsolete modules whose
# libraries (readline, ncurses, Berkeley DB, NIS with Kerberos) nothing here uses.
DYNLOAD_SKIP_PREFIXES = ("_test", "_xx", "xx", "_ctypes_test", "nis.", "ossaudiodev.", "readline.", "_curses",
                         "_dbm.", "_tkinter")
THIRD_PARTY_SKIP = {"pip", "setuptools", "pkg_resources", "_distutils_hack", "wheel", "__pycache__"}
# glibc's own libraries are the node's (as for any dynamically linked program); everything else is carried.
GLIBC = ("ld-linux", "libc.so", "libm.so", "libdl.so", "libpthread.so", "librt.so", "libutil.so", "libresolv.so",
         "libanl.so", "libmvec.so", "libnss_", "libthread_db.so", "libBrokenLocale.so", "linux-vdso")


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


def needed_libs(elf_files) -> dict:
    """soname -> path for every non-glibc library ldd lists for the given ELF files."""
    found = {}
    for f in elf_files:
        proc = subprocess.run(["ldd", f], capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            line = line.strip()
            if "=>" not in line:
                continue
            name, _, rest = line.partition("=>")
            name, path = name.strip(), rest.strip().split(" (")[0].strip()
            if name.startswith(GLIBC):
                continue
            if path == "not found" or not path.startswith("/"):
                raise SystemExit(f"build_bundle: {f} needs {name}, which is not installed on this machine")
            found[name] = path
    return found


def is_elf(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"\x7fELF"


def c_string(data: bytes) -> str:
    """A C string literal holding exactly these bytes (octal escapes: no greedy hex digits)."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\?' else "\\%03o" % b for b in data) + '"'


def python_version_answer(exe: str, **env) -> bytes:
    """What the bundle prints for CNI_COMMAND=VERSION (exit 0 required)."""
    proc = subprocess.run([exe], env={"CNI_COMMAND": "VERSION", **env}, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    if proc.returncode != 0 or b"supportedVersions" not in proc.stdout:
        raise SystemExit(f"build_bundle: {exe} does not answer VERSION: {proc.returncode} {proc.stdout!r} {proc.stderr!r}")
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
        for path, is_pkg in ((os.path.join(rel, "__init__.pyc"), 1), (rel + ".pyc", 0)):
            if os.path.isfile(path):
                break
        else:
            raise SystemExit(f"build_bundle: {name} (packaging/frozen_modules.txt) is not a .pyc module of the bundle")
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


def build_launcher(root: str, out_exe: str, link: str, cc: str, internal: str, defines=()) -> None:
    inc = sysconfig.get_config_var("INCLUDEPY")
    libpl = sysconfig.get_config_var("LIBPL")
    src = os.path.join(root, "packaging", "launcher.c")
    cflags = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers", f"-I{inc}", *defines]
    # Extension modules resolve the Py* symbols from the executable: export them (-export-dynamic).
    # DT_RPATH (not RUNPATH): ld.so applies the executable's RPATH to dependencies of dlopen'ed modules too.
    ldflags = ["-Wl,--export-dynamic", "-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN/_internal/lib", "-Wl,-O1", "-s"]
    # libpython's built-in pyexpat and zlib modules: link those libraries statically too (one fewer
    # shared object to map at every start), when the static archives are installed.
    syslibs = []
    for lib in ("expat", "z"):
        static = os.path.join("/usr/lib", sysconfig.get_config_var("MULTIARCH") or "", f"lib{lib}.a")
        syslibs += [static] if os.path.exists(static) else [f"-l{lib}"]
    syslibs += ["-lm", "-ldl", "-lpthread", "-lutil"]
    if link == "static":
        argv = [cc, "-no-pie", *cflags, "-o", out_exe, src, os.path.join(libpl, f"libpython{sys.version_info[0]}.{sys.version_info[1]}.a"),
                *syslibs, "-no-pie", *ldflags]
    elif link == "pie":
        argv = [cc, "-fPIE", "-pie", *cflags, "-o", out_exe, src,
                os.path.join(libpl, f"libpython{sys.version_info[0]}.{sys.version_info[1]}-pic.a"), *syslibs, *ldflags]
    elif link == "shared":
        soname = sysconfig.get_config_var("INSTSONAME")
        libdir = sysconfig.get_config_var("LIBDIR")
        if not os.path.exists(os.path.join(internal, "lib", soname)):
            shutil.copy2(os.path.join(libdir, soname), os.path.join(internal, "lib", soname))
        argv = [cc, *cflags, "-o", out_exe, src, os.path.join(internal, "lib", soname), "-lm", "-ldl", *ldflags]
    else:
        raise SystemExit(f"build_bundle: unknown --link {link}")
    subprocess.run(argv, check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the bundle directory to make (must not exist)")
    ap.add_argument("--root", required=True, help="the checkout (cni_ipam/ and packaging/)")
    ap.add_argument("--name", default="cni-ipam")
    ap.add_argument("--link", default="static", choices=("static", "pie", "shared"))
    ap.add_argument("--cc", default=os.environ.get("CC", "gcc"))
    ap.add_argument("--no-fast-version", action="store_true", help="leave VERSION to Python (no answer baked in)")
    ap.add_argument("--no-freeze", action="store_true",
                    help="leave the plugin path's modules as files (no frozen table in the launcher; for comparison)")
    ap.add_argument("--entry", default=os.path.join("packaging", "cni_ipam_entry.py"),
                    help="the entry script, relative to --root (installed as the module cni_ipam_entry)")
    args = ap.parse_args(argv)

    if sys.prefix == sys.base_prefix:
        raise SystemExit("build_bundle: run me with the build virtual environment's python, not the machine's")
    out = os.path.abspath(args.out)
    internal = os.path.join(out, "_internal")
    lib = os.path.join(internal, "lib")
    pylib = os.path.join(lib, PYDIR)
    dynload = os.path.join(pylib, "lib-dynload")
    os.makedirs(dynload)

    # 1. the stdlib of the interpreter we embed
    stdlib = sysconfig.get_paths()["stdlib"]
    n_std = compile_tree(stdlib, pylib, STDLIB_SKIP_DIRS, STDLIB_SKIP_FILES)
    src_dynload = os.path.join(stdlib, "lib-dynload")
    for name in sorted(os.listdir(src_dynload)):
        if name.endswith(".so") and not name.startswith(DYNLOAD_SKIP_PREFIXES):
            shutil.copy2(os.path.join(src_dynload, name), os.path.join(dynload, name))

    # 2. the third-party packages of the build venv (with their metadata: importlib.metadata finds it)
    site = sysconfig.get_paths()["purelib"]
    n_third = compile_tree(site, pylib, top_only=lambda name, is_dir: (
        name.split("-")[0] not in THIRD_PARTY_SKIP and not name.endswith(".pth") and name != "distutils-precedence.pth"
        and not name.startswith(("pip-", "setuptools-", "_distutils_hack"))))

    # 3. cni_ipam and the entry modules, from the checkout
    n_own = compile_tree(os.path.join(args.root, "cni_ipam"), os.path.join(pylib, "cni_ipam"), {"__pycache__"})
    for src, mod in ((args.entry, "cni_ipam_entry"), (os.path.join("packaging", "cni_ipam_fastjson.py"), "cni_ipam_fastjson")):
        py_compile.compile(os.path.join(args.root, src), cfile=os.path.join(pylib, mod + ".pyc"), dfile=mod + ".py",
                           doraise=True, optimize=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)

    # 4. the launcher, then the shared libraries everything in the bundle needs
    exe = os.path.join(out, args.name)
    defines, n_frozen = [], 0
    with tempfile.TemporaryDirectory(prefix="cni-ipam-build-") as tmp:
        if not args.no_freeze:
            names = read_module_list(os.path.join(args.root, "packaging", "frozen_modules.txt"))
            header = os.path.join(tmp, "frozen_modules.h")
            n_frozen = write_frozen_table(pylib, names, header)
            defines.append(f'-DFROZEN_MODULES="{header}"')
        build_launcher(args.root, exe, args.link, args.cc, internal, defines)
        if not args.no_fast_version:
            answer = python_version_answer(exe)
            build_launcher(args.root, exe, args.link, args.cc, internal, [*defines, f"-DVERSION_ANSWER={c_string(answer)}"])
            if python_version_answer(exe) != answer or python_version_answer(exe, CNI_IPAM_LIST_MODULES="1") != answer:
                raise SystemExit("build_bundle: the launcher's VERSION answer differs from the Python path's")
    elves = [exe] + [os.path.join(d, f) for d, _, fs in os.walk(pylib) for f in fs
                     if ".so" in f and is_elf(os.path.join(d, f))]
    for soname, path in sorted(needed_libs(elves).items()):
        dst = os.path.join(lib, soname)
        if not os.path.exists(dst):
            shutil.copy2(path, dst)
            os.chmod(dst, 0o644)
    print(f"build_bundle: {out}: {n_std} stdlib, {n_third} third-party, {n_own} cni_ipam modules; "
          f"{len(names) if n_frozen else 0} frozen into the launcher ({n_frozen} bytes of code); "
          f"libraries: {' '.join(sorted(f for f in os.listdir(lib) if '.so' in f)) or 'none'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
