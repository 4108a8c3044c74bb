"""The one error type for problems a user can fix: a wrong file, a bad option, a diverged run.

Raised at each boundary where outside input enters (files, command-line options, dashboard
forms) with a message that says what was expected and what was found. The CLI catches it once
(`faces.cli.main`: message on stderr, exit status 2, no traceback); each dashboard page catches it
once (`st.error`, the page keeps running). Anything else that escapes is a bug in this project and
keeps its traceback.

It subclasses ValueError so that callers which already guard a value check keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input or environment, with an expected-vs-found message."""


def expected(what: str, wanted: str, found: object) -> UserError:
    """``UserError("<what>: expected <wanted>, found <found>")``: the house form of a message."""
    return UserError(f"{what}: expected {wanted}, found {found}")
