"""The synthesis prompt P(x, M), verbatim from the reference."""

from __future__ import annotations

from collections.abc import Sequence

import jinja2

SYNTHESIS_TEMPLATE = """\
You are given a problem and a list of reference responses. Your job is to analyze these \
references and provide your own response.

Original Problem:
{{ original_prompt }}

Reference Responses:
{% for response in ref_responses %}
Reference {{ loop.index }}:
{{ response }}
{% endfor %}

Now, based on the original problem and reference responses above, please provide your own \
comprehensive solution.
"""
"""The reference's template text, byte for byte (the backslashes only fold long lines)."""

# jinja2's defaults (keep_trailing_newline=False, no trim_blocks) are part of the
# reference's output: the prompt ends with "solution." and each reference is framed
# by the blank lines the for/endfor lines leave.
_TEMPLATE = jinja2.Template(SYNTHESIS_TEMPLATE)


def render_synthesis_prompt(original_prompt: str, references: Sequence[str]) -> str:
    """P(x, M) exactly as the reference pipeline renders it: x the original content of the
    last user message, M the previous round's compacted messages in order."""
    return _TEMPLATE.render(original_prompt=original_prompt, ref_responses=list(references))
