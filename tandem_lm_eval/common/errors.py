"""The one root of every error the package raises for a user's input.

The command line and ``TandemLM`` turn a ``TandemError`` into one line (its message names the value, the
file or the option that is wrong); anything else that escapes is a bug and keeps its traceback. Each room
defines its own subclass (``ConfigError``, ``ClassifierError``, ``StoreError``, ...) so callers can catch
the kind they handle; the subclasses may also derive from the built-in type they used to be
(``ValueError``, ``RuntimeError``) so existing ``except`` clauses keep working.
"""

from __future__ import annotations


class TandemError(Exception):
    """A problem with what the user gave (a value, a path, a file, a pairing): reported as one line."""
