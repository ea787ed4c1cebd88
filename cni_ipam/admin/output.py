"""What the admin commands print: severity levels (shared by show, metrics and pool), tables, ages."""

from __future__ import annotations

from typing import Sequence

LEVELS = ("ok", "warning", "critical", "emergency")
UNKNOWN_LEVEL = "unknown"  # a network whose ranges are not known (no conf file) or not readable

# How bad, for the worst level of several networks: a real alarm outranks "cannot tell", and
# "cannot tell" outranks ok (as monitoring aggregators order OK < UNKNOWN < WARNING < CRITICAL).
_RANK = {"ok": 0, UNKNOWN_LEVEL: 1, "warning": 2, "critical": 3, "emergency": 4}
DEFAULT_THRESHOLDS = (70.0, 85.0, 95.0)  # warning, critical, emergency (percent used)


def level_for(percent: float, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> str:
    """ok below the warning threshold, else the highest threshold reached."""
    level = "ok"
    for name, limit in zip(LEVELS[1:], thresholds):
        if percent >= limit:
            level = name
    return level


def worse(a: str, b: str) -> str:
    return a if _RANK.get(a, -1) >= _RANK.get(b, -1) else b


def worst_level(reports: Sequence) -> str:
    """The worst ``level`` of the networks (reports); ``unknown`` counts (a network nobody can judge is not ok)."""
    level = "ok"
    for rep in reports:
        level = worse(level, rep.level)
    return level


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(seconds, 0))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            major, rest = divmod(seconds, size)
            minor_unit, minor_size = {"d": ("h", 3600), "h": ("m", 60), "m": ("s", 1)}[unit]
            minor = rest // minor_size
            return f"{major}{unit}{minor}{minor_unit}" if minor else f"{major}{unit}"
    return f"{seconds}s"


def table(rows: list[list[str]], right: Sequence[int] = ()) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
