"""A tiny document: headings, paragraphs, lists, images and tables, rendered twice.

`Document` collects blocks and writes them as Markdown (`index.md`) and as one self-contained
HTML page (`index.html`, the PNGs embedded as base64 data URIs, so the file can be mailed or
attached to an issue).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class Document:
    """Blocks rendered twice, to Markdown and to self-contained HTML."""

    out_dir: Path
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append((f"h{level}", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def items(self, items: Iterable[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def image(self, filename: str, alt: str, width_in: float | None = None) -> None:
        """An image; `width_in` (the figure's width in inches) fixes its size on the HTML
        page, whatever the dpi it was saved at."""
        self.blocks.append(("img", (filename, alt, width_in)))

    def links(self, lead: str, links: Iterable[tuple[str, str]]) -> None:
        """A line of links to files beside the page: `lead: [text](href), ...`."""
        self.blocks.append(("links", (lead, list(links))))

    def table(self, table: pd.DataFrame) -> None:
        self.blocks.append(("table", table))

    def markdown(self) -> str:
        out: list[str] = []
        for kind, value in self.blocks:
            if kind.startswith("h"):
                out.append("#" * int(kind[1:]) + " " + value)
            elif kind == "p":
                out.append(value)
            elif kind == "ul":
                out.append("\n".join(f"- {x}" for x in value))
            elif kind == "img":
                out.append(f"![{value[1]}]({value[0]})")
            elif kind == "links":
                out.append(f"{value[0]}: " + ", ".join(f"[{t}]({h})" for t, h in value[1]))
            elif kind == "table":
                out.append(md_table(value))
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        body: list[str] = []
        for kind, value in self.blocks:
            if kind.startswith("h"):
                body.append(f"<{kind}>{_inline(value)}</{kind}>")
            elif kind == "p":
                body.append(f"<p>{_inline(value)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in value) + "</ul>")
            elif kind == "img":
                data = base64.b64encode((self.out_dir / value[0]).read_bytes()).decode("ascii")
                mime = "image/svg+xml" if value[0].endswith(".svg") else "image/png"
                size = f' style="width:{round(96 * value[2])}px"' if value[2] else ""
                body.append(
                    f'<figure><img alt="{html.escape(value[1])}"{size} '
                    f'src="data:{mime};base64,{data}"/>'
                    f"<figcaption>{html.escape(value[0])}</figcaption></figure>"
                )
            elif kind == "links":
                refs = ", ".join(
                    f'<a href="{html.escape(h)}">{html.escape(t)}</a>' for t, h in value[1]
                )
                body.append(f"<p>{html.escape(value[0])}: {refs}</p>")
            elif kind == "table":
                body.append(value.to_html(index=False, border=0, na_rep="", escape=True))
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0 1.5em}"
    "th,td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
    "th{background:#f4f4f4}img{max-width:100%}figure{margin:1em 0}"
    "figcaption{color:#777;font-size:0.8em}code{background:#f4f4f4;padding:0 3px}"
)


def _inline(text: str) -> str:
    """Markdown `code` spans to <code>, everything else escaped."""
    parts = re.split(r"`([^`]*)`", text)
    return "".join(
        f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts)
    )


def md_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "_(empty)_"

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cell(c) for c in table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    lines = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join([head, rule, *lines])
