"""Find the final ``\\boxed{...}`` answer in LaTeX-flavoured model output.

Models (and the MATH solutions) put the final answer in ``\\boxed{...}``; the content can hold nested
braces (``\\boxed{\\frac{1}{2}}``), so a regex cannot find its end: we count braces. ``\\fbox{...}``
and the brace-less ``\\boxed 5`` are accepted too, as in the MATH reference code.
"""

from __future__ import annotations

import re

# "\boxed" or "\fbox" not followed by a letter (so "\boxedx" is not a match).
_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _braced(text: str, open_pos: int) -> str | None:
    """The content of the brace group opening at ``open_pos``; None when it never closes."""
    depth = 0
    for i in range(open_pos, len(text)):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
            continue  # an escaped brace ("\{") opens or closes a set, not a group; skip the backslash only
        if ch == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif ch == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[open_pos + 1 : i]
    return None


def last_boxed(text: str) -> str | None:
    """Content of the LAST complete ``\\boxed{...}`` in ``text``, stripped; None when there is none.

    A box that is cut off (no closing brace) does not count, and an earlier complete one is used
    instead: a truncated final box is not an answer.
    """
    for match in reversed(list(_BOX.finditer(text))):
        pos = match.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos < len(text) and text[pos] == "{":
            content = _braced(text, pos)
            if content is not None:
                return content.strip()
        elif pos > match.end() and pos < len(text):
            # "\boxed 5": the answer runs to the end of the math ("$") or the line.
            tail = re.split(r"[$\n]", text[pos:], maxsplit=1)[0].strip()
            if tail:
                return tail
    return None
