/*
 * cni-ipam launcher: the executable of the self-contained bundle built by scripts/build.sh.
 *
 * It embeds CPython (Debian's libpython3.11.a, linked in statically; see packaging/build_bundle.py)
 * and runs the same entry module as the PyInstaller build, packaging/cni_ipam_entry.py, with no
 * bootloader in between:
 *
 *   * no re-exec and no LD_LIBRARY_PATH: the bundle's own shared libraries (those the extension
 *     modules need: libssl, libffi, ...) are found through this executable's DT_RPATH,
 *     $ORIGIN/_internal/lib, which the dynamic loader also applies to libraries loaded by dlopen;
 *   * the interpreter is configured with the documented PyConfig API: isolated (no PYTHON*
 *     variables, no user site directory), no site module, no bytecode writing, UTF-8 mode, and the
 *     module search path set explicitly to the bundle, so nothing is searched for and nothing of the
 *     node's Python is ever looked at;
 *   * the bundle directory is the directory of the real executable: /proc/self/exe, else the path
 *     the kernel was given (AT_EXECFN), else argv[0] (through PATH); symlinks are resolved, so
 *     /opt/cni/bin/cni-ipam -> .../cni-ipam.d/cni-ipam -> current/cni-ipam works.
 *
 * Layout (relative to the executable's directory):
 *   _internal/lib/                      shared libraries the extension modules need
 *   _internal/lib/pythonX.Y/            the stdlib, cni_ipam and the third-party packages, as .pyc
 *   _internal/lib/pythonX.Y/lib-dynload extension modules
 *
 * sys.argv is argv unchanged (no Python options are parsed), sys.executable is the resolved path of
 * this executable, sys.frozen is True.  The entry module decides the exit status: os._exit after a
 * plugin call, sys.exit for admin commands (handled here as the python command handles it).
 *
 * CNI_COMMAND=VERSION is answered here, without starting Python, when the build baked the answer in
 * (VERSION_ANSWER): packaging/build_bundle.py builds the launcher once without it, runs that bundle's
 * Python path for VERSION and compiles the exact bytes it printed into the second build, so the list
 * of supported versions exists only in cni_ipam/plugin/skel.py.  The Python path answers VERSION
 * without reading stdin or looking at any other variable, and exits 1 when stdout cannot be written;
 * so does this.  CNI_IPAM_LIST_MODULES (a test hook of the entry module) still goes to Python.
 *
 * A failure to start (bundle damaged or moved apart) is reported on stderr and, for a CNI call
 * (CNI_COMMAND set), also as a CNI error on stdout, exit 1.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

#ifndef ENTRY_MODULE
#define ENTRY_MODULE "cni_ipam_entry"
#endif

#define STR2(x) #x
#define STR(x) STR2(x)
#define PYDIR "python" STR(PY_MAJOR_VERSION) "." STR(PY_MINOR_VERSION)

static int startup_failure(const char *what, const char *detail)
{
    fprintf(stderr, "cni-ipam: cannot start: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    if (getenv("CNI_COMMAND") != NULL) {
        /* CNI error 999 ("internal"), in the plugin's own layout; the message is ASCII we wrote. */
        printf("{\n    \"cniVersion\": \"1.1.0\",\n    \"code\": 999,\n"
               "    \"msg\": \"cni-ipam cannot start: %s\",\n    \"details\": \"the installed bundle is damaged; reinstall it\"\n}\n",
               what);
        fflush(stdout);
    }
    return 1;
}

#ifdef VERSION_ANSWER
static const char version_answer[] = VERSION_ANSWER;

static int answer_version(void)
{
    signal(SIGPIPE, SIG_IGN);  /* as Python: a closed pipe is a write error (exit 1), not a signal */
    const char *p = version_answer;
    size_t left = sizeof version_answer - 1;
    while (left > 0) {
        ssize_t n = write(STDOUT_FILENO, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 1;
        p += n;
        left -= (size_t)n;
    }
    return 0;
}
#endif

/* The real path of this executable into out (PATH_MAX bytes); 0 on success. */
static int find_self(const char *argv0, char *out)
{
    ssize_t n = readlink("/proc/self/exe", out, PATH_MAX - 1);
    if (n > 0 && out[0] == '/') {
        out[n] = '\0';
        /* Gone already (the link reads "... (deleted)" when an upgrade removed it): try the other ways. */
        if (access(out, X_OK) == 0)
            return 0;
    }
    const char *execfn = (const char *)getauxval(AT_EXECFN);
    if (execfn != NULL && realpath(execfn, out) != NULL)
        return 0;
    if (argv0 == NULL || argv0[0] == '\0')
        return -1;
    if (strchr(argv0, '/') != NULL)
        return realpath(argv0, out) != NULL ? 0 : -1;
    const char *path = getenv("PATH");
    if (path == NULL)
        return -1;
    char candidate[PATH_MAX];
    for (const char *p = path; *p != '\0';) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > 0 && snprintf(candidate, sizeof candidate, "%.*s/%s", (int)len, p, argv0) < (int)sizeof candidate
            && access(candidate, X_OK) == 0 && realpath(candidate, out) != NULL)
            return 0;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return -1;
}

static int set_path(PyConfig *config, wchar_t **field, const char *value, PyStatus *status)
{
    *status = PyConfig_SetBytesString(config, field, value);
    return PyStatus_Exception(*status);
}

int main(int argc, char **argv)
{
    char exe[PATH_MAX], home[PATH_MAX], stdlib[PATH_MAX], dynload[PATH_MAX];

#ifdef VERSION_ANSWER
    const char *command = getenv("CNI_COMMAND"), *list_modules = getenv("CNI_IPAM_LIST_MODULES");
    if (command != NULL && strcmp(command, "VERSION") == 0 && (list_modules == NULL || list_modules[0] == '\0'))
        return answer_version();
#endif

    if (find_self(argc > 0 ? argv[0] : NULL, exe) != 0)
        return startup_failure("cannot find its own executable", NULL);
    char *slash = strrchr(exe, '/');
    int dirlen = (int)(slash - exe);
    if (snprintf(home, sizeof home, "%.*s/_internal", dirlen, exe) >= (int)sizeof home
        || snprintf(stdlib, sizeof stdlib, "%s/lib/" PYDIR, home) >= (int)sizeof stdlib
        || snprintf(dynload, sizeof dynload, "%s/lib-dynload", stdlib) >= (int)sizeof dynload)
        return startup_failure("the bundle path is too long", exe);
    if (access(stdlib, R_OK | X_OK) != 0)
        return startup_failure("the bundle has no library directory", stdlib);

    PyStatus status;
    PyPreConfig preconfig;
    PyPreConfig_InitIsolatedConfig(&preconfig);
    preconfig.utf8_mode = 1;  /* the same encodings whatever locale the runtime passes (often none) */
    status = Py_PreInitialize(&preconfig);
    if (PyStatus_Exception(status))
        goto init_failed;

    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;
    config.user_site_directory = 0;
    config.write_bytecode = 0;
    config.pathconfig_warnings = 0;
    config.optimization_level = 1;  /* as the bundle's .pyc files were compiled */
    config.parse_argv = 0;
    config.install_signal_handlers = 1;
    status = PyConfig_SetBytesArgv(&config, argc, argv);
    if (PyStatus_Exception(status))
        goto config_failed;
    if (set_path(&config, &config.program_name, argc > 0 && argv[0] ? argv[0] : exe, &status)
        || set_path(&config, &config.executable, exe, &status)
        || set_path(&config, &config.base_executable, exe, &status)
        || set_path(&config, &config.home, home, &status)
        || set_path(&config, &config.prefix, home, &status)
        || set_path(&config, &config.base_prefix, home, &status)
        || set_path(&config, &config.exec_prefix, home, &status)
        || set_path(&config, &config.base_exec_prefix, home, &status))
        goto config_failed;
    const char *paths[] = {stdlib, dynload};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        wchar_t *w = Py_DecodeLocale(paths[i], NULL);
        if (w == NULL) {
            PyConfig_Clear(&config);
            return startup_failure("cannot decode the bundle path", paths[i]);
        }
        status = PyWideStringList_Append(&config.module_search_paths, w);
        PyMem_RawFree(w);
        if (PyStatus_Exception(status))
            goto config_failed;
    }
    config.module_search_paths_set = 1;

    status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status))
        goto init_failed;

    PySys_SetObject("frozen", Py_True);
    PyObject *module = PyImport_ImportModule(ENTRY_MODULE);
    int rc = 0;
    if (module == NULL) {
        /* SystemExit (an admin command's sys.exit): PyErr_Print exits with its code, as python does. */
        PyErr_Print();
        rc = 1;
    } else {
        Py_DECREF(module);
    }
    if (Py_FinalizeEx() < 0 && rc == 0)
        rc = 120;
    return rc;

config_failed:
    PyConfig_Clear(&config);
init_failed:
    if (PyStatus_IsExit(status))
        return status.exitcode;
    return startup_failure("the Python runtime did not initialise", status.err_msg);
}
