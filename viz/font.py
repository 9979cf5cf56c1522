"""The diagram font: every SVG embeds it, so any browser draws each label at the widths the layout measured.

Graphviz lays labels out with Helvetica's advance widths (graphviz-pure always; the system `dot` where
fontconfig maps Helvetica to Liberation Sans or Arial, and wider fonts elsewhere, which only leave more
room); the embedded subset of Liberation Sans (fontdata.py) has exactly those widths.
"""
from . import fontdata

FONT_STYLE_ID = "graphdiff-font"


def font_style(svg_text=None):
    """A <style> element with the @font-face rules of the embedded font (only the faces svg_text uses)
    and a rule that draws every SVG text with it; CSS outranks the font-family attributes Graphviz writes."""
    faces = []
    for key, data in fontdata.WOFF.items():
        weight, style = key.split()
        if svg_text is not None and ((weight == "bold" and 'font-weight="bold"' not in svg_text)
                                     or (style == "italic" and 'font-style="italic"' not in svg_text)):
            continue
        faces.append(f'@font-face {{ font-family: "{fontdata.FAMILY}"; font-weight: {weight}; '
                     f'font-style: {style}; src: url(data:font/woff;base64,{data}) format("woff"); }}')
    rule = f'text {{ font-family: "{fontdata.FAMILY}", Helvetica, Arial, sans-serif; }}'
    return f'<style id="{FONT_STYLE_ID}">{" ".join(faces)} {rule}</style>'


def embed_font(svg_text):
    """SVG text from Graphviz with its font embedded, so any browser draws each label at the widths the
    layout measured: the layout uses Helvetica's advance widths (graphviz-pure always; the system `dot`
    where fontconfig maps Helvetica to Liberation Sans or Arial, and wider fonts elsewhere, which only
    leave more room), and the embedded Liberation Sans has exactly those widths."""
    if FONT_STYLE_ID in svg_text:
        return svg_text
    start = svg_text.find("<svg")
    end = svg_text.find(">", start) if start >= 0 else -1
    if end < 0:
        return svg_text
    return svg_text[:end + 1] + "\n" + font_style(svg_text) + svg_text[end + 1:]


def text_width(text, size=11.0, weight="normal"):
    """Width in points of text drawn in the diagram font (weight "normal", "bold" or "italic"); characters
    outside ASCII count as the widest letter, so the estimate never falls short."""
    table = fontdata.ADVANCE[weight]
    widest = max(table)
    return size * sum(table[ord(c) - 32] if 32 <= ord(c) < 127 else widest for c in text) / 1000.0


def strip_font(svg_text):
    """The SVG without its embedded font (for pages that hold many frames and embed the font once)."""
    start = svg_text.find(f'<style id="{FONT_STYLE_ID}">')
    if start < 0:
        return svg_text
    end = svg_text.index("</style>", start) + len("</style>")
    return svg_text[:start] + svg_text[end:]
