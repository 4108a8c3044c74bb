"""A page's form settings that survive page switches and travel in the page's URL.

Streamlit forgets a widget's value once a run does not draw it (switching pages is such a run), and
a widget given both a default and a value in ``st.session_state`` warns. So a page declares its
settings as :class:`Field` s (widget key, URL parameter, how to read and write the value), draws
its widgets with those keys and no defaults of their own, and brackets them with a
:class:`PageForm`:

    form = PageForm("surface", [integer("surface_points", "points", 3, 61, 21), ...])
    form.restore()           # before the widgets: the URL's values, else the last ones, else defaults
    ... widgets with key=... and no value/index/default ...
    form.remember()          # after them: keep the values for later runs and write them to the URL

A URL that a session opens with (a shared link) sets the form in its first run;
a value that is unknown or out of range is named in a warning and replaced by the default. The URL
holds checkpoints by their name in the workspace (``FOLDER/FILE``), devices by their name in the
device lists, and numbers as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import streamlit as st

from dat.errors import expected

_LAST_URL = "_form_last_url"  # the query parameters a page of this session wrote last


@dataclass(frozen=True)
class Field:
    """One setting: its widget ``key``, its URL parameter ``param``, ``check(value) -> value`` (raises
    ValueError when the value is not allowed), ``parse(text) -> value`` and ``show(value) -> text``."""

    key: str
    param: str
    default: object
    check: Callable[[object], object]
    parse: Callable[[str], object]
    show: Callable[[object], str] = str


def choice(key: str, param: str, options: list, default) -> Field:
    """One of ``options`` (a selectbox or radio)."""
    options = list(options)

    def check(value):
        if value not in options:
            raise expected(param, f"one of {options}", repr(value))
        return value

    return Field(key, param, default, check, check)


def choices(key: str, param: str, options: list, default: list) -> Field:
    """Several of ``options`` in the URL as a comma-separated list (a multiselect)."""
    options = list(options)

    def check(value):
        value = list(value)
        wrong = [v for v in value if v not in options]
        if wrong or len(set(value)) != len(value):
            raise expected(param, f"distinct values among {options}", repr(value))
        return value

    return Field(key, param, list(default), check, lambda text: check([v for v in text.split(",") if v]),
                 lambda value: ",".join(value))


def _number(kind: type, lo, hi, param: str):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise expected(param, f"{'an integer' if kind is int else 'a number'} in [{lo}, {hi}]", repr(value))
        if not lo <= value <= hi:
            raise expected(param, f"a value in [{lo}, {hi}]", repr(value))
        return kind(value)

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise expected(param, f"a number in [{lo}, {hi}]", repr(text)) from None
        return check(int(value) if kind is int and value.is_integer() else value)

    return check, parse


def integer(key: str, param: str, lo: int, hi: int, default: int) -> Field:
    """An integer in [lo, hi] (a slider or number input of integers)."""
    return Field(key, param, int(default), *_number(int, lo, hi, param))


def number(key: str, param: str, lo: float, hi: float, default: float) -> Field:
    """A number in [lo, hi] (a number input of floats)."""
    return Field(key, param, float(default), *_number(float, lo, hi, param), show=lambda v: f"{float(v):g}")


def interval(key: str, param: str, lo: float, hi: float, default: tuple) -> Field:
    """(low, high) with lo <= low < high <= hi (a range slider), in the URL as "low,high"."""
    one, _ = _number(float, lo, hi, param)

    def check(value):
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise expected(param, "two numbers low,high", repr(value))
        low, high = one(value[0]), one(value[1])
        if not low < high:
            raise expected(param, "low < high", repr(value))
        return (low, high)

    def parse(text):
        parts = text.split(",")
        try:
            return check(tuple(float(p) for p in parts))
        except ValueError:
            raise expected(param, f"two numbers low,high in [{lo}, {hi}]", repr(text)) from None

    return Field(key, param, tuple(default), check, parse, show=lambda v: f"{float(v[0]):g},{float(v[1]):g}")


class PageForm:
    """The settings of one page: restored before its widgets, remembered (and put in the URL) after.

    ``restore`` may be called more than once in a run, for fields whose options depend on a widget
    drawn earlier (the role drop-downs of the chosen trio)."""

    def __init__(self, page: str, fields: list[Field] = ()):
        self.page, self.fields = page, []
        self._kept = st.session_state.setdefault(f"_form_{page}", {})
        params = st.query_params.to_dict()
        # A link is opened in a new session: the URL sets the form in a session's first run, before
        # any page of it has written its URL. Later runs never read it back, since the query string
        # a rerun carries can lag behind the one the last run wrote, and a page switch may keep the
        # previous page's parameters.
        self.from_url = bool(params) and _LAST_URL not in st.session_state
        self.params = params
        self.warnings: list[str] = []
        if fields:
            self.restore(fields)

    def restore(self, fields: list[Field]) -> None:
        """Set each field's widget state: from the URL when it is a link to open, else the value the
        page had last (also on another page visit), else the default."""
        for f in fields:
            self.fields.append(f)
            if self.from_url and f.param in self.params:
                try:
                    st.session_state[f.key] = self._kept[f.key] = f.parse(self.params[f.param])
                    continue
                except ValueError as exc:
                    self.warnings.append(f"{exc}; using {f.show(f.default)!r} instead")
                    st.session_state[f.key] = self._kept[f.key] = f.default
                    continue
            value = st.session_state.get(f.key, self._kept.get(f.key, f.default))
            try:
                value = f.check(value)
            except ValueError:  # an option that is gone (a deleted checkpoint): the default
                value = f.default
            st.session_state[f.key] = value

    @property
    def applied_link(self) -> bool:
        """Whether this run set the form from a link, with every value valid."""
        return self.from_url and not self.warnings and not self._unknown()

    def _unknown(self) -> list[str]:
        return sorted(set(self.params) - {f.param for f in self.fields})

    def remember(self) -> None:
        """Keep the fields' values for the next runs and write them to the URL; warn about the
        link's values that were refused or unknown."""
        unknown = self._unknown() if self.from_url else []
        if self.warnings or unknown:
            known = ", ".join(f.param for f in self.fields)
            st.warning("The link's settings could not all be used: "
                       + "; ".join(self.warnings + [f"unknown parameter {p!r} ignored (known: {known})"
                                                    for p in unknown]))
        url = {}
        for f in self.fields:
            value = st.session_state.get(f.key, f.default)
            self._kept[f.key] = value
            url[f.param] = f.show(value)
        if st.query_params.to_dict() != url:
            st.query_params.from_dict(url)
        st.session_state[_LAST_URL] = url
