"""The error of every classifier file that is missing, malformed, or made for another setup."""

from __future__ import annotations


class ClassifierError(ValueError):
    """A classifier file that is missing, malformed, or made for another setup."""
