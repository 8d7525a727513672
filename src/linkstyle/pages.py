"""The HTML pages' templates (package data under templates/: an editor and a linter read them as HTML).

A template is a page plus the fragments it defines for repeated parts (``<template data-fragment="name">``
elements, cut out of the page, as are ``<!-- ... -->`` comment lines). Each ``__SLOT__`` is filled in one
pass with text the caller has already escaped, so a value can never be read as a slot.
"""

from __future__ import annotations

import re
from importlib import resources

_FRAGMENT = re.compile(r'<template data-fragment="([a-z-]+)">(.*?)</template>\n', re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->\n", re.DOTALL)
_SLOT = re.compile(r"__([A-Z]+)__")


class Template:
    """One page of templates/ (``name``, e.g. ``report.html``) and its fragments."""

    def __init__(self, name: str) -> None:
        text = resources.files("linkstyle").joinpath(f"templates/{name}").read_text(encoding="utf-8")
        self.fragments = dict(_FRAGMENT.findall(text))
        self.page = _COMMENT.sub("", _FRAGMENT.sub("", text))

    def fill(self, fragment: str, **slots: str) -> str:
        """The page (``fragment="page"``) or a fragment with every ``__SLOT__`` replaced by ``slots["slot"]``."""
        text = self.page if fragment == "page" else self.fragments[fragment]
        return _SLOT.sub(lambda m: slots[m.group(1).lower()], text)
