"""HTML pages from the templates in viz/assets/ (installed as package data): the page, its stylesheet and
its script are files of their own; a written page inlines them, so it is one self-contained file that opens
from disk with no network.

A template's placeholders are @NAME@ (capitals and underscores); fill() replaces them all in one pass, so a
value that itself contains "@NAME@" (a node name, a title) is never filled again.
"""
import importlib.resources
import re

PLACEHOLDER = re.compile(r"@([A-Z][A-Z_]*)@")


def asset(name):
    """The text of viz/assets/<name> (a template, a stylesheet or a script)."""
    return importlib.resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def fill(template, **parts):
    """template with each @NAME@ replaced by parts[NAME]; a placeholder without a part, or a part without a
    placeholder, is an error (a template and its code out of step)."""
    used = set()

    def part(m):
        if m.group(1) not in parts:
            raise KeyError(f"template placeholder @{m.group(1)}@ has no value; pass {m.group(1)}=...")
        used.add(m.group(1))
        return str(parts[m.group(1)])
    out = PLACEHOLDER.sub(part, template)
    unused = sorted(set(parts) - used)
    if unused:
        raise KeyError(f"the template has no placeholder for {unused}")
    return out


def style(css):
    """A <style> element holding a stylesheet's text."""
    return f"<style>\n{css}</style>"


def script(*sources):
    """One <script> element holding the scripts' texts in order; "</" is escaped so that no text (a JSON
    payload holding a node named "</script>") can end the element early."""
    return "<script>\n" + "\n".join(s.replace("</", "<\\/") for s in sources) + "</script>"


def inline_svg(svg):
    """SVG text fit for innerHTML: no XML prolog or DOCTYPE."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg
