"""One exception type for every user-facing failure.

The CLI turns it into a single ``error: ...`` line and exit status 1. Messages name the
file, node or module at fault and the reason, so the user knows what to change.
"""


class SnnCompileError(Exception):
    """A problem with the user's input (file, model, graph, data) that we can explain."""
