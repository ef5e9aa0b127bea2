"""``--output-format full`` (``audit``'s default): each finding as ruff prints it, its
source line, the evidence the rule gathered, then the summary (the caller adds it)::

    examples/padded_batch_size_buggy.py:46:13: GR001 [*] DP-padded `forward_batch.batch_size` ...
       |
    46 | batch_size=forward_batch.batch_size,  # BUG: padded to 12, metadata holds 10
       |
       = in PaddedBatchTRTLLMBackend.forward_extend
       = padded size (line 46): forward_batch.batch_size
       = argument (line 46): batch_size=forward_batch.batch_size
       = kernel (line 36): trtllm_batch_context_with_kv_cache()

Rich markup: user text is escaped.
"""

from __future__ import annotations

from rich.markup import escape

from .concise import error_line, finding_line
from .report import Report


def render(report: Report) -> str:
    out: list[str] = []
    for f in report.findings():
        out.append(finding_line(report, f))
        gutter = " " * len(str(f.line))
        line = report.source_line(f)
        if line:
            out += [f"[blue]{gutter} |[/blue]", f"[blue]{f.line} |[/blue] {escape(line)}", f"[blue]{gutter} |[/blue]"]
        out.append(f"{gutter} [blue]=[/blue] in {escape(f.symbol)}")
        for step in f.evidence:
            where = f" (line {step.line})" if step.line else ""
            out.append(f"{gutter} [blue]=[/blue] {escape(step.label)}{where}: {escape(step.code)}")
        out.append("")
    out += [error_line(report, e) for e in report.errors()]
    return "\n".join(out) + ("\n" if out else "")
