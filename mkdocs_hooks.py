"""MkDocs hook: the docstrings cite code with Sphinx roles (:class:`~crmvae.config.RunConfig`);
the API reference shows the cited name as code, without the role, and ``~a.b.C`` as ``C``."""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:mod|class|func|meth|data|attr|exc|obj):(<code>)(~?)([^<]*)(</code>)")


def _name(match: re.Match[str]) -> str:
    open_tag, short, name, close_tag = match.groups()
    return open_tag + (name.rsplit(".", 1)[-1] if short else name) + close_tag


def on_page_content(html: str, **kwargs: object) -> str:
    return ROLE.sub(_name, html)
