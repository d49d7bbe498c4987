"""The HTML performance report as Markdown that the Dagster UI renders.

Dagster's UI cannot open an HTML file from an asset's metadata: a ``file://`` link is blocked by
the browser (dagster-io/dagster#24243), a path metadata value is only copied to the clipboard,
and Markdown metadata is rendered without raw HTML (react-markdown with ``rehype-sanitize``,
images allowed as ``data:`` URIs). So the report's content is translated to Markdown: headings,
paragraphs, tables (GitHub syntax) and the plots as data-URI images, in the report's order. The
UI shows it behind "[Show Markdown]"; the full HTML file stays where the IO manager wrote it.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_SKIPPED = {"head", "style", "script", "title"}
_BLOCKS = {"p", "figcaption", "section", "header", "main", "div", "figure", "ul", "ol", "li"}
_WS = re.compile(r"\s+")


def _cell_text(text: str) -> str:
    return _WS.sub(" ", text).strip().replace("|", "\\|")


class _MarkdownWriter(HTMLParser):
    """Stream HTML events into Markdown blocks (see :func:`html_to_markdown`)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._text: list[str] = []
        self._skip = 0
        self._heading = 0
        self._table: list[tuple[bool, list[str]]] | None = None  # (is_header_row, cells)
        self._row: list[str] | None = None
        self._row_is_header = False
        self._in_thead = False
        self._cell: list[str] | None = None

    # --- text -------------------------------------------------------------------------------
    def _sink(self) -> list[str]:
        return self._cell if self._cell is not None else self._text

    def _flush(self) -> None:
        text = _WS.sub(" ", "".join(self._text)).strip()
        self._text = []
        if not text:
            return
        if self._heading:
            self.blocks.append("#" * self._heading + " " + text)
        else:
            self.blocks.append(text)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._sink().append(data)

    # --- tags -------------------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self._skip += 1
            return
        if self._skip:
            return
        attributes = dict(attrs)
        if tag in {"h1", "h2", "h3", "h4"}:
            self._flush()
            self._heading = int(tag[1])
        elif tag in _BLOCKS:
            self._flush()
        elif tag == "br":
            self._sink().append(" ")
        elif tag == "code":
            self._sink().append("`")
        elif tag in {"strong", "b"}:
            self._sink().append("**")
        elif tag == "img":
            src = attributes.get("src") or ""
            alt = (attributes.get("alt") or "").replace("[", "").replace("]", "")
            if src:
                self._flush()
                self.blocks.append(f"![{_WS.sub(' ', alt).strip()}]({src})")
        elif tag == "table":
            self._flush()
            self._table = []
        elif tag == "thead":
            self._in_thead = True
        elif tag == "tr" and self._table is not None:
            self._row, self._row_is_header = [], self._in_thead
        elif tag in {"td", "th"} and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if tag in {"h1", "h2", "h3", "h4"}:
            self._flush()
            self._heading = 0
        elif tag in _BLOCKS:
            self._flush()
        elif tag == "code":
            self._sink().append("`")
        elif tag in {"strong", "b"}:
            self._sink().append("**")
        elif tag in {"td", "th"} and self._cell is not None and self._row is not None:
            self._row.append(_cell_text("".join(self._cell)))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self._table.append((self._row_is_header, self._row))
            self._row = None
        elif tag == "thead":
            self._in_thead = False
        elif tag == "table" and self._table is not None:
            self.blocks.append(_markdown_table(self._table))
            self._table = None

    def close(self) -> None:
        super().close()
        self._flush()


def _markdown_table(rows: list[tuple[bool, list[str]]]) -> str:
    """GitHub table syntax; a table without a header row gets an empty one (the syntax needs
    one), e.g. the report's lineage table of ``name | value`` rows."""
    if not rows:
        return ""
    width = max(len(cells) for _, cells in rows)
    header = next((cells for is_header, cells in rows if is_header), None)
    body = [cells for is_header, cells in rows if not is_header or cells is not header]
    head = header if header is not None else [" "] * width

    def line(cells: list[str]) -> str:
        padded = cells + [""] * (width - len(cells))
        return "| " + " | ".join(padded) + " |"

    return "\n".join([line(head), "|" + "---|" * width, *(line(cells) for cells in body)])


def html_to_markdown(html_text: str) -> str:
    """Translate a report page (:func:`ml4t_pipeline.lib.report.build_report`) to Markdown.

    Headings ``<h1>``..``<h4>`` become ``#``..``####``; paragraphs, captions and section
    boundaries become paragraphs; ``<table>`` becomes a GitHub table (header row from
    ``<thead>``, an empty header when there is none; ``|`` in cells escaped); ``<img>`` becomes
    ``![alt](src)`` with its ``src`` unchanged (the report's plots are PNG data URIs);
    ``<code>`` and ``<strong>`` keep their Markdown marks. ``<head>``, ``<style>`` and
    ``<script>`` are left out, as are other tags (their text is kept).

    Parameters
    ----------
    html_text : str
        An HTML document or fragment.

    Returns
    -------
    str
        Markdown, blocks separated by a blank line; empty when the page has no text or images.
    """
    writer = _MarkdownWriter()
    writer.feed(html_text)
    writer.close()
    return "\n\n".join(block for block in writer.blocks if block) + ("\n" if writer.blocks else "")
