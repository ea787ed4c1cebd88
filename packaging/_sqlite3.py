"""A stand-in for CPython's _sqlite3 in the static cni-ipam executable, which has no SQLite.

pyroute2 imports ``sqlite3`` when it is imported (for its NDB database, which cni-ipam never uses);
this module lets ``import sqlite3`` succeed and makes every use of a database fail loudly.
"""

version = "2.6.0"
sqlite_version = "0.0.0"
PARSE_DECLTYPES = 1
PARSE_COLNAMES = 2


class Error(Exception):
    pass


class Warning(Exception):  # noqa: A001  (the DB-API name)
    pass


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class NotSupportedError(DatabaseError):
    pass


class OperationalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    pass


class IntegrityError(DatabaseError):
    pass


class InternalError(DatabaseError):
    pass


class DataError(DatabaseError):
    pass


class Row:
    pass


class Connection:
    pass


class Cursor:
    pass


def register_adapter(*args):
    pass


def register_converter(*args):
    pass


def connect(*args, **kwargs):
    raise NotSupportedError("the static cni-ipam executable has no SQLite")
