"""The one exception type users see for bad input, and the value checks that raise it.

Every check of a user-supplied number or name goes through these helpers, so "an integer" never
accepts ``True`` and "a number" never accepts NaN or infinity, wherever the value comes from.

Values that become paths are checked here too, once, by one of two rules:

- ``path_name``: a name groupsweep creates a folder or file from (a sweep name, a part tag, a trial or
  search-cell name) is 1 to ``NAME_MAX`` characters from ``A-Z a-z 0-9 . _ + -`` and starts with a
  letter or digit. It is therefore exactly one path component: never ``.``, ``..``, hidden, absolute,
  a URI, nor a command-line option, and the same on every filesystem and object store.
- ``relative_path``: a file name that a dataset's metadata lists (an image path) is relative and has no
  ``..`` component, so it names a file inside the dataset's folder.
"""

from __future__ import annotations

import math
import numbers
import re
from pathlib import PurePosixPath

# The longest name ``path_name`` accepts: far below the 255 bytes of a file name on common filesystems,
# so a trial name still fits with the suffixes Ray and groupsweep add to it.
NAME_MAX = 128
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
NAME_RULE = f"1 to {NAME_MAX} characters from A-Z a-z 0-9 . _ + -, starting with a letter or digit"


def single_line(error: BaseException) -> str:
    """``error``'s message on one line (each run of whitespace, line breaks included, as one space); its type's
    name when it has no message."""
    return " ".join(str(error).split()) or type(error).__name__


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


def path_name(what: str, value) -> str:
    """``value`` if it is a valid name for a folder or file that groupsweep creates (the module's first
    rule); else ``GroupsweepError`` ``"<what> <value> is not a valid name: ..."``."""
    if not isinstance(value, str) or len(value) > NAME_MAX or not NAME_PATTERN.fullmatch(value):
        length = f" ({len(value)} characters)" if isinstance(value, str) and len(value) > NAME_MAX else ""
        raise GroupsweepError(f"{what} {value!r} is not a valid name{length}: use {NAME_RULE}")
    return value


def relative_path(what: str, value) -> str:
    """``value`` if it is a non-empty relative path without a ``..`` component (the module's second rule),
    so it stays inside the folder it is relative to; else ``GroupsweepError`` naming it."""
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise GroupsweepError(f"{what} {value!r} is not a file name")
    path = PurePosixPath(value.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"[A-Za-z]:", value):
        raise GroupsweepError(f"{what} {value!r} leaves its folder: give a path relative to it, without '..'")
    return value
