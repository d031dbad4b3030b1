"""The one exception type users see for bad input, and the value checks that raise it.

Every check of a user-supplied number or name goes through these helpers, so "an integer" never
accepts ``True`` and "a number" never accepts NaN or infinity, wherever the value comes from.
"""

from __future__ import annotations

import math
import numbers


class GroupsweepError(ValueError):
    """Bad user input (unknown name, invalid value, malformed file).

    The message is a single line that names the bad value and what is allowed; the command line
    prints it as ``error: <message>`` and exits with status 2, before any Ray work starts.
    """


def choose(kind: str, value, allowed) -> None:
    """Raise ``GroupsweepError`` unless ``value`` is one of ``allowed``.

    The message names the kind of value, the bad value and the allowed ones, e.g.
    ``unknown dataset 'foo'; choose one of: colored-digits, synthetic-waterbirds``.
    """
    allowed = list(allowed)
    if value not in allowed:
        raise GroupsweepError(f"unknown {kind} {value!r}; choose one of: {', '.join(map(str, allowed))}")


def is_integer(value, minimum: int | None = None) -> bool:
    """Whether ``value`` is an integer (numpy integers included, booleans not) and at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return False
    return minimum is None or value >= minimum


def is_real(value, minimum: float | None = None, maximum: float | None = None, *, strict: bool = False) -> bool:
    """Whether ``value`` is a finite real number (not a boolean) within ``[minimum, maximum]``.

    ``strict=True`` excludes the bounds themselves (the open interval).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return False
    if minimum is not None and (value <= minimum if strict else value < minimum):
        return False
    return maximum is None or (value < maximum if strict else value <= maximum)


def positive_integer(what: str, value) -> int:
    """``value`` as an ``int`` if it is an integer >= 1; else ``GroupsweepError``
    ``"<what> must be a positive integer, got <value>"``."""
    if not is_integer(value, 1):
        raise GroupsweepError(f"{what} must be a positive integer, got {value!r}")
    return int(value)
