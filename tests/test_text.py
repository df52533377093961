"""Text from a server, a file or a revision is shown with its control characters visible, and
rendered in Markdown inert (issue 24, item 3). The renderers' own tests hold them to it."""

from __future__ import annotations

import json
import re

from uaip_db.text import inert_markdown, one_line, visible

PAYLOAD = "<img src=x onerror=alert(1)> ![x](https://evil/track.png) \x1b[32mgreen\x1b[0m"


def test_control_characters_are_shown_and_tabs_and_newlines_stay() -> None:
    assert visible("a\x1b[31mb\rc\x00\x7f\x9b\u202eok\tx\ny") == (
        "a\\x1b[31mb\\x0dc\\x00\\u007f\\u009b\\u202eok\tx\ny"
    )
    assert one_line("two\nlines\x1b") == "two\\x0alines\\x1b"
    assert visible("plain text, ünïcode and ☃") == "plain text, ünïcode and ☃"


def test_json_made_visible_is_the_same_json() -> None:
    data = {"error": "a\x7fb\x9bc\u202ed\x1be", "n": 1}
    for ensure_ascii in (True, False):
        text = json.dumps(data, ensure_ascii=ensure_ascii)
        assert json.loads(visible(text)) == data


def test_markdown_text_is_inert() -> None:
    text = inert_markdown(PAYLOAD + " & ![ref][1]")
    assert "<" not in text and ">" not in text and "\x1b" not in text
    assert not re.search(r"(?<!\\)!\[", text)  # an image only when not escaped
    assert text.startswith("&lt;img src=x onerror=alert(1)&gt; \\![x](https://evil/track.png)")
    assert "\\x1b[32mgreen\\x1b[0m &amp; \\![ref][1]" in text
