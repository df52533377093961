"""Text that came from elsewhere (a server's message, a file, a revision, a catalog comment),
made safe to show: its control characters visible, and, for Markdown, inert.

A server error may carry ANSI escape sequences (`RAISE EXCEPTION E'\\x1b[32m...'`) that would
recolour or rewrite the terminal, and a comment or docstring may carry HTML or a remote image
that a Markdown viewer would run or fetch. The cli reporter passes everything it prints through
`visible`; the Markdown renderers pass free text through `inert_markdown`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# C0 controls but tab and newline (the tool's own line breaks), DEL, C1 controls (ESC's
# single-byte twin CSI, U+009B, among them), and the Unicode marks that reorder or hide text
# (bidirectional overrides and isolates, zero-width joiners, the line and paragraph separators).
CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


def _shown(found: re.Match[str]) -> str:
    number = ord(found.group())
    # C0 as \x1b; the rest as \u007f, a valid JSON escape too (json.dumps leaves DEL, and with
    # ensure_ascii=False the others, unescaped), so `--json` output stays JSON that means the same.
    return f"\\x{number:02x}" if number < 0x20 else f"\\u{number:04x}"


def visible(text: str) -> str:
    """`text` with every control character shown as an escape (`\\x1b`); tabs and newlines stay."""
    return CONTROL.sub(_shown, text)


def one_line(text: str) -> str:
    """`text` for a place that is one line: newlines shown too (`\\x0a`)."""
    return visible(text).replace("\n", "\\x0a")


# `![alt](url)` and `![alt][ref]`: an image a Markdown viewer fetches when it shows the page.
IMAGE = re.compile(r"!(?=\[)")


def inert_markdown(text: str, *, keep_gt: bool = False) -> str:
    """Free text for Markdown prose: no raw HTML (`<`, `>`, `&` escaped), no image syntax (`!\\[`),
    control characters visible. Links stay links; they run nothing until someone follows them.
    `keep_gt` leaves `>` as it is (with every `<` escaped no tag can open): for a document's own
    lines, which write `a -> b`."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;")
    escaped = escaped if keep_gt else escaped.replace(">", "&gt;")
    return visible(IMAGE.sub(r"\\!", escaped))


def first_few(items: Sequence[str], separator: str = ", ", limit: int = 5) -> str:
    """The first `limit` items joined, then how many more there are."""
    shown = separator.join(items[:limit])
    return shown + (f"{separator}and {len(items) - limit} more" if len(items) > limit else "")
