"""Lazy stand-in for PyInstaller's bootstrap module ``pyimod03_ctypes`` (Linux).

The stock module's ``install()`` runs on every start of the frozen program and imports ctypes (a few
milliseconds) whenever ctypes is in the bundle, only to make ``ctypes.CDLL`` look for libraries in
``sys._MEIPASS`` first.  The CNI plugin path never uses ctypes.  This version puts a finder on
``sys.meta_path`` that waits for the first ``import ctypes`` and applies the same patch right after
the real module has executed, so a program that never imports ctypes never pays for it.

Bootstrap constraints: only built-in modules and ``sys``/``os`` may be used here.
"""

import sys


def _frozen_name(name):
    # As PyInstaller: a library name that does not exist is looked up by basename in sys._MEIPASS.
    import os

    if name and not os.path.isfile(name):
        frozen_name = os.path.join(sys._MEIPASS, os.path.basename(name))
        if os.path.isfile(frozen_name):
            name = frozen_name
    return name


def _patch(ctypes):
    class PyInstallerImportError(OSError):
        def __init__(self, name):
            self.msg = (
                "Failed to load dynlib/dll %r. Most likely this dynlib/dll was not found when the application "
                "was frozen." % name
            )
            self.args = (self.msg,)

    class PyInstallerCDLL(ctypes.CDLL):
        def __init__(self, name, *args, **kwargs):
            name = _frozen_name(name)
            try:
                super().__init__(name, *args, **kwargs)
            except Exception as base_error:
                raise PyInstallerImportError(name) from base_error

    class PyInstallerPyDLL(ctypes.PyDLL):
        def __init__(self, name, *args, **kwargs):
            name = _frozen_name(name)
            try:
                super().__init__(name, *args, **kwargs)
            except Exception as base_error:
                raise PyInstallerImportError(name) from base_error

    ctypes.CDLL = PyInstallerCDLL
    ctypes.cdll = ctypes.LibraryLoader(PyInstallerCDLL)
    ctypes.PyDLL = PyInstallerPyDLL
    ctypes.pydll = ctypes.LibraryLoader(PyInstallerPyDLL)


class _PatchingLoader:
    """Wraps the real loader of ctypes; patches the module once it has executed."""

    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        _patch(module)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _CtypesFinder:
    """A one-shot meta path finder for ``ctypes``."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != "ctypes":
            return None
        try:
            sys.meta_path.remove(cls)
        except ValueError:
            pass
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None

    @classmethod
    def invalidate_caches(cls):
        pass


def install():
    if "ctypes" in sys.modules:  # already imported (not expected at bootstrap): patch now
        _patch(sys.modules["ctypes"])
        return
    sys.meta_path.insert(0, _CtypesFinder)
