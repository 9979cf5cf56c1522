"""HTML pages from the templates in viz/assets/ (installed as package data): the page, its stylesheet and
its script are files of their own; a written page inlines them, so it is one self-contained file that opens
from disk with no network.

A template's placeholders are @NAME@ (capitals and underscores); fill() replaces them all in one pass, so a
value that itself contains "@NAME@" (a node name, a title) is never filled again.
"""
import html
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


def viewer(svg, title="", group=None, view_class=""):
    """An SVG (text) in the pan-and-zoom viewer of assets/panzoom.js: a bar (title, zoom out/in, fit, 1:1, the
    scale) over a scrolling view. Viewers with one group share one scale (Version A beside Version B). The
    page needs viewer_style() in its head and viewer_script() after the viewers. view_class: more classes
    for the scrolling view (the stepper fills its views, class "svg", frame by frame)."""
    grp = f' data-group="{html.escape(group)}"' if group else ""
    return (f'<div class="pz"{grp}><div class="pz-bar"><span class="pz-title">{html.escape(title)}</span>'
            '<button class="pz-out" title="zoom out">&#8722;</button><button class="pz-in" title="zoom in">+</button>'
            '<button class="pz-fit" title="the default: fit the width, node text at least 10 px">fit</button>'
            '<button class="pz-one" title="natural size">1:1</button><span class="pz-scale"></span></div>'
            f'<div class="pz-view{" " + view_class if view_class else ""}">{inline_svg(svg)}</div></div>')


def viewer_style():
    """The viewer's stylesheet as a <style> element."""
    return style(asset("panzoom.css"))


def viewer_script():
    """The viewer's script as a <script> element (it starts every viewer on the page when the page loads)."""
    return script(asset("panzoom.js"))
