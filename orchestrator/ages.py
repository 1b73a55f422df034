"""Relative ages as people write them (`90s`, `30m`, `12h`, `14d`, `2w`): one parser, one printer."""

from __future__ import annotations

from datetime import timedelta

UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}  # largest first


def parse_age(text: str) -> timedelta | None:
    """Given a relative age (a whole number and one unit of s, m, h, d, w), return it; None if it is not one."""
    number, unit = text[:-1], text[-1:]
    if unit in UNITS and number.isascii() and number.isdigit():
        return timedelta(seconds=int(number) * UNITS[unit])
    return None


def age_text(seconds: float, exact: bool = False) -> str:
    """Given seconds, return them in the largest unit below a week (`3d`, `5h`, `12m`, `40s`), rounded down; with
    exact, in the largest unit (weeks too) that divides them (`14d`, `90s`), as parse_age reads it back."""
    seconds = max(0, int(seconds))
    for unit, size in UNITS.items():
        if exact and seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
        if not exact and unit != "w" and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
