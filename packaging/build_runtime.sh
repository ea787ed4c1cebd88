#!/usr/bin/env bash
# Build the static Python runtime the cni-ipam executable is linked from: CPython 3.11 with the stdlib's
# extension modules compiled in (none loaded from files), OpenSSL, libffi and zlib, all static against
# musl, from Debian's source packages.  Run by scripts/build.sh (which keeps the result in a cache
# outside the checkout, keyed by a hash of every input); by hand:
#
#   packaging/build_runtime.sh --arch amd64|arm64 --src DIR --out DIR [--jobs N]
#
# --src holds the Debian source packages (.dsc + tarballs) of python3.11, openssl, libffi and zlib
# and musl (scripts/build.sh fetches them with apt-get source); for arm64 also musl-arm64/, Debian's
# musl, musl-dev and musl-tools arm64 packages unpacked (the headers and start files to build against).
# --out receives (and nothing else is written outside a temporary work directory):
#   bin/cc                      the compiler wrapper (gcc + musl specs + the kernel headers)
#   lib/lib{python3.11,ssl,crypto,ffi,z}.a
#   include/python3.11/         Python's headers (pyconfig.h of this build)
#   lib/python3.11/             the pure-Python stdlib of the same source, with this build's _sysconfigdata
#   link-libs                   the libraries libpython needs, for the final link
#   modules                     the built-in extension modules (sys.builtin_module_names of the build)
#   lib/musl/libc.a             musl's C library with its older allocator (see the musl stage)
# Needs: gcc (amd64) or gcc-aarch64-linux-gnu + linux-libc-dev-arm64-cross (arm64), musl-tools,
# dpkg-dev (dpkg-source), make, python3.11 (the build Python of a cross build, and for freezing).
set -euo pipefail
ARCH=
SRC=
OUT=
JOBS=$(nproc)
STAGES="musl zlib libffi openssl python3.11"
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH=${2:-}; shift ;;
    --src) SRC=${2:-}; shift ;;
    --out) OUT=${2:-}; shift ;;
    --jobs) JOBS=${2:-}; shift ;;
    --stages) STAGES=${2:-}; shift ;;  # a subset, into an --out that has the others (development)
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "build_runtime.sh: unknown option $1" >&2; exit 2 ;;
  esac
  [ $# -gt 0 ] && shift
done
[ -n "$ARCH" ] && [ -n "$SRC" ] && [ -n "$OUT" ] || { echo "build_runtime.sh: --arch, --src and --out are required" >&2; exit 2; }
SRC=$(realpath "$SRC")
OUT=$(realpath -m "$OUT")
case "$ARCH" in
  amd64) TRIPLE=x86_64-linux-musl GCC=x86_64-linux-gnu-gcc AR=ar RANLIB=ranlib CROSS= READELF=x86_64-linux-gnu-readelf SSLTARGET=linux-x86_64
         MUSL=/usr/lib/x86_64-linux-musl SPECS=$MUSL/musl-gcc.specs
         KINC=(/usr/include/linux /usr/include/asm-generic /usr/include/x86_64-linux-gnu/asm) ;;
  arm64) TRIPLE=aarch64-linux-musl GCC=aarch64-linux-gnu-gcc CROSS=aarch64-linux-gnu- AR=aarch64-linux-gnu-ar RANLIB=aarch64-linux-gnu-ranlib
         READELF=aarch64-linux-gnu-readelf
         SSLTARGET=linux-aarch64 MUSL=$SRC/musl-arm64/usr/lib/aarch64-linux-musl SPECS=
         KINC=(/usr/aarch64-linux-gnu/include/linux /usr/aarch64-linux-gnu/include/asm-generic
               /usr/aarch64-linux-gnu/include/asm) ;;
  *) echo "build_runtime.sh: --arch amd64 or arm64" >&2; exit 2 ;;
esac
for tool in "$GCC" "$AR" make dpkg-source python3.11; do
  command -v "$tool" >/dev/null || { echo "build_runtime.sh: $tool missing" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/cni-ipam-runtime.XXXXXX)
trap 'rm -rf -- "$WORK"' EXIT
[ "$STAGES" = "musl zlib libffi openssl python3.11" ] && rm -rf -- "$OUT"
mkdir -p "$OUT/bin" "$OUT/lib" "$OUT/include"
stage() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
P=$OUT

# The compiler: gcc with musl's specs (Debian's musl-gcc does the same), plus the kernel's uapi headers
# (linux/, asm/), which musl does not ship and the -nostdinc of the specs hides.
rm -rf "$OUT/include/kernel"
mkdir -p "$OUT/include/kernel"
for d in "${KINC[@]}"; do
  [ -d "$d" ] || { echo "build_runtime.sh: $d missing (kernel headers)" >&2; exit 1; }
  cp -R "$d" "$OUT/include/kernel/$(basename "$d")"
done
[ -f "$MUSL/musl-gcc.specs" ] || { echo "build_runtime.sh: $MUSL/musl-gcc.specs missing" >&2; exit 1; }
# Debian's specs, with our libc.a (lib/musl/, the musl stage) found before the package's.  Debian's
# arm64 specs name /usr/...: pointed at the unpacked packages.
sed -e "s#/usr/include/aarch64-linux-musl#$SRC/musl-arm64/usr/include/aarch64-linux-musl#g" \
    -e "s#/usr/lib/aarch64-linux-musl#$MUSL#g" "$MUSL/musl-gcc.specs" \
  | sed -e "/^\*link_libgcc:/{n;s#^#-L$OUT/lib/musl #}" >"$OUT/musl-gcc.specs"
SPECS=$OUT/musl-gcc.specs
cat >"$OUT/bin/cc" <<EOF
#!/bin/sh
exec $GCC "\$@" -specs "$SPECS" -isystem "$OUT/include/kernel"
EOF
chmod 0755 "$OUT/bin/cc"
CC=$OUT/bin/cc
export CC AR RANLIB READELF
CFLAGS_COMMON="-O2 -ffunction-sections -fdata-sections"

unpack() {  # unpack NAME: the Debian source package NAME (with Debian's patches) into $WORK/NAME
  local dsc
  dsc=$(find "$SRC" -maxdepth 1 -name "${1}_*.dsc" | sort | tail -n 1)
  [ -n "$dsc" ] || { echo "build_runtime.sh: no $1 source package in $SRC" >&2; exit 1; }
  dpkg-source --no-check -x "$dsc" "$WORK/$1" >/dev/null
}

log() { echo "build_runtime [$ARCH]: $*" >&2; }
t0=$(date +%s)

if stage musl; then
# musl's C library again, from Debian's source package of the same version, with the allocator musl
# had before 1.2.1 (--with-malloc=oldmalloc): the default one (mallocng) maps and unmaps a page or
# two at a time, about 130 mmap and 45 munmap calls per ADD against about 90 brk calls with this one;
# measured in docs/performance.md.  Only libc.a: the headers and start files are the package's.
log "musl"
unpack musl
(cd "$WORK/musl" && CC=$GCC CROSS_COMPILE=$CROSS CFLAGS="-O2" ./configure --target="$TRIPLE" --prefix="$P" \
   --disable-shared --with-malloc=oldmalloc >/dev/null && make -j"$JOBS" lib/libc.a >/dev/null 2>&1)
mkdir -p "$P/lib/musl"
cp "$WORK/musl/lib/libc.a" "$P/lib/musl/"
fi

if stage zlib; then
log "zlib"
unpack zlib
(cd "$WORK/zlib" && CFLAGS="$CFLAGS_COMMON" CHOST=$TRIPLE ./configure --static --prefix="$P" >/dev/null \
   && make -j"$JOBS" libz.a >/dev/null && make install >/dev/null)
fi

if stage libffi; then
log "libffi"
unpack libffi
(cd "$WORK/libffi" && CFLAGS="$CFLAGS_COMMON" ./configure --host="$TRIPLE" --build=x86_64-linux-gnu --prefix="$P" \
   --libdir="$P/lib" --disable-shared --enable-static --disable-docs --disable-multi-os-directory >/dev/null \
   && make -j"$JOBS" >/dev/null 2>&1 && make install >/dev/null)
fi

if stage openssl; then
log "openssl"
unpack openssl
# no-async: musl has no ucontext; no-dso/no-engine/no-module: nothing is ever loaded from a file.
(cd "$WORK/openssl" && ./Configure "$SSLTARGET" no-shared no-tests no-async no-afalgeng no-dso no-engine no-module \
   no-legacy no-comp no-ssl3 no-weak-ssl-ciphers --prefix="$P" --libdir=lib --openssldir=/etc/ssl \
   $CFLAGS_COMMON >/dev/null && make -j"$JOBS" build_libs >/dev/null && make install_dev >/dev/null)
fi

if stage python3.11; then
log "python3.11"
unpack python3.11
# No -O of ours: CPython's own -O3 (its OPT, which these CFLAGS follow) stands; -O2 here cost speed.
PYFLAGS="-ffunction-sections -fdata-sections"
# musl targets count as cross builds here: give configure the answers of the run tests it cannot run
# (those of Linux with musl on amd64 and arm64; computed gotos matter for speed).
cat >"$WORK/config.site" <<'EOF'
ac_cv_file__dev_ptmx=yes
ac_cv_file__dev_ptc=no
ac_cv_buggy_getaddrinfo=no
ac_cv_computed_gotos=yes
ac_cv_working_tzset=yes
ac_cv_broken_poll=no
ac_cv_broken_nice=no
ac_cv_broken_sem_getvalue=no
ac_cv_broken_mbstowcs=no
ac_cv_posix_semaphores_enabled=yes
ac_cv_pthread_system_supported=yes
ac_cv_have_size_t_format=yes
ac_cv_rshift_extends_sign=yes
ac_cv_x87_double_rounding=no
ac_cv_aligned_required=no
ac_cv_wchar_t_signed=yes
ac_cv_have_chflags=no
ac_cv_have_lchflags=no
EOF
# Modules nothing here uses, whose libraries are not built: off, so configure looks for none of them.
disabled=(_tkinter _curses _curses_panel _dbm _gdbm nis readline _sqlite3 _uuid _bz2 _lzma ossaudiodev spwd
          _scproxy _testcapi _testclinic _testinternalcapi _testbuffer _testimportmultiple _testmultiphase
          _xxtestfuzz _ctypes_test xxlimited xxlimited_35 audioop _crypt nis syslog _xxsubinterpreters
          _codecs_cn _codecs_hk _codecs_iso2022 _codecs_jp _codecs_kr _codecs_tw _multibytecodec)
off=()
for m in "${disabled[@]}"; do off+=("py_cv_module_$m=n/a"); done
(cd "$WORK/python3.11" \
  && env "${off[@]}" MODULE_BUILDTYPE=static CONFIG_SITE="$WORK/config.site" \
     PKG_CONFIG_LIBDIR="$P/lib/pkgconfig" PKG_CONFIG_PATH= \
     CFLAGS="$PYFLAGS" CPPFLAGS="-I$P/include" LDFLAGS="-static -L$P/lib" \
     LIBFFI_CFLAGS="-I$P/include" LIBFFI_LIBS="-lffi" ZLIB_CFLAGS="-I$P/include" ZLIB_LIBS="-lz" \
     ./configure --host="$TRIPLE" --build=x86_64-linux-gnu --with-build-python=/usr/bin/python3.11 --prefix="$P" --disable-shared \
       --without-ensurepip --disable-test-modules --with-openssl="$P" --with-system-expat=no \
       --with-system-libmpdec=no >"$WORK/py-configure.log" 2>&1 \
  || { tail -n 30 "$WORK/py-configure.log" >&2; exit 1; })
# configure lists the stdlib's extension modules in Modules/Setup.stdlib (*static* here) but, on
# Linux, leaves building them to setup.py as shared objects: as Modules/Setup.local they are compiled
# into libpython instead (makesetup regenerates the Makefile and Modules/config.c).
cp "$WORK/python3.11/Modules/Setup.stdlib" "$WORK/python3.11/Modules/Setup.local"
# _ctypes is left to setup.py even in Setup.stdlib: its line, with what setup.py defines for libffi 3.4
# (no "=" on the line: makesetup takes such a line for a variable).
printf "\n*static*\n" >>"$WORK/python3.11/Modules/Setup.local"  # after Setup.stdlib's *disabled* list
echo "_ctypes _ctypes/_ctypes.c _ctypes/callbacks.c _ctypes/callproc.c _ctypes/stgdict.c _ctypes/cfield.c \
-I$P/include -DHAVE_FFI_PREP_CIF_VAR -DHAVE_FFI_PREP_CLOSURE_LOC -DHAVE_FFI_CLOSURE_ALLOC -lffi" \
  >>"$WORK/python3.11/Modules/Setup.local"
(cd "$WORK/python3.11" && make Makefile >"$WORK/py-make.log" 2>&1 \
   && make -j"$JOBS" libpython3.11.a pybuilddir.txt >>"$WORK/py-make.log" 2>&1) \
  || { tail -n 40 "$WORK/py-make.log" >&2; cp "$WORK/py-make.log" "$OUT/" 2>/dev/null; exit 1; }

PY=$WORK/python3.11
cp "$PY/libpython3.11.a" "$PY/Modules/_decimal/libmpdec/libmpdec.a" "$PY/Modules/expat/libexpat.a" "$P/lib/"
mkdir -p "$P/include/python3.11"
cp -R "$PY"/Include/. "$P/include/python3.11/"
cp "$PY/pyconfig.h" "$P/include/python3.11/"
mkdir -p "$P/lib/python3.11"
cp -R "$PY"/Lib/. "$P/lib/python3.11/"
cp "$PY/$(cat "$PY/pybuilddir.txt")"/_sysconfigdata*.py "$P/lib/python3.11/"
# The libraries the static modules need (Modules/Setup: MODLIBS) and libpython's own (LIBS).
printf 'include Makefile\nprint-link-libs:\n\t@echo $(LIBS) $(MODLIBS)\n' >"$PY/link-libs.mk"
(cd "$PY" && make -s -f link-libs.mk print-link-libs) \
  | sed -e 's#Modules/_decimal/libmpdec/libmpdec.a#-lmpdec#' -e 's#Modules/expat/libexpat.a#-lexpat#' >"$P/link-libs"
sed -n 's/^[[:space:]]*{"\([A-Za-z0-9_.]*\)", PyInit_.*/\1/p' "$PY/Modules/config.c" | sort >"$P/modules"
for m in _ssl _hashlib _ctypes _json zlib fcntl select _socket binascii math _struct; do
  grep -qx "$m" "$P/modules" || { echo "build_runtime.sh: $m was not built in (see configure's output)" >&2; exit 1; }
done
fi
rm -rf "${P:?}/share" "$P/bin/openssl" "$P/lib/pkgconfig" "$P"/lib/*.la
log "done in $(( $(date +%s) - t0 ))s: $P"
