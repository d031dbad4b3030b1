"""The one exception type users see for bad input."""


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
