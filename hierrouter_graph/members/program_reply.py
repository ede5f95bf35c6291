"""The text side of a program-aided member: find the program in a reply, compose the reply from
the program and its real output, and read the run back off a composed reply.

Why the reply is the single source of truth: a replay store keeps only the reply text (and its
token counts), so the trace (``HopRecord["program"]``) and the per-execution price of a replayed
hop must be recoverable from the text alone. ``compose_reply`` writes a fixed, unambiguous form and
``program_trace`` parses exactly that form, so a fresh hop and its replay agree field for field.

The composed reply (``program_timeout_s`` 5, a failing program)::

    ```python
    <the program>
    ```
    ```output
    <the tail of what it printed>
    ```
    Status: error (exit status 1).
    ```error
    <the tail of stderr: the traceback>
    ```

A successful run has no status line and no error block. Unambiguous because the program never
holds a line starting with ``` (``extract_program`` ends a block there and refuses such a bare
reply) and a printed line starting with ``` is shown with a leading space.
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import TYPE_CHECKING

from hierrouter_graph.state import ProgramTrace

if TYPE_CHECKING:
    from hierrouter_graph.sandbox import SandboxResult

__all__ = [
    "DEFAULT_PROGRAM_SYSTEM_PROMPT",
    "NO_PROGRAM",
    "compose_reply",
    "extract_program",
    "last_output_line",
    "program_trace",
]

DEFAULT_PROGRAM_SYSTEM_PROMPT = (
    "You solve problems by writing Python. Reply with ONE complete Python program in a single "
    "```python block; it is run and its output is your answer. The program must print the final "
    "answer alone on the last line of its output (only the value: a number, a fraction like 3/4, "
    "an expression, or an option letter). You may import numpy, sympy, math, fractions and "
    "itertools. Do not call input(), use the network, or read or write files."
)
"""The system prompt of a ``kind: program`` member whose spec sets none (``system_prompt`` overrides it)."""

NO_PROGRAM = "no_program"
"""``ProgramTrace["status"]`` of a reply that held no program (nothing ran, nothing was charged)."""

_OPEN = re.compile(r"^[ \t]*```[ \t]*(?:python3?|py)\b[^\n]*$", re.IGNORECASE | re.MULTILINE)
_FENCE_LINE = re.compile(r"^[ \t]*```", re.MULTILINE)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_COMPOSED = re.compile(
    r"\A```python\n(?P<code>(?:[^\n]*\n)*?)```\n"
    r"```output\n(?P<output>(?:[^\n]*\n)*?)```"
    r"(?:\n(?P<status>Status: [^\n]*)(?:\n```error\n(?P<error>(?:[^\n]*\n)*?)```)?)?\Z"
)
_SANDBOX_FILE = re.compile(r"(?:/[^\s\"']*)?/hierrouter-sandbox-[A-Za-z0-9_]+/solution\.py")
_BOOTSTRAP_FRAMES = re.compile(
    r"^(Traceback \(most recent call last\):\n)(?:  File \"<string>\", line \d+, in (?:<module>|_main)\n)+",
    re.MULTILINE,
)
_EXIT_STATUS = re.compile(r"exit status (-?\d+)")
_OUTPUT_BLOCK = re.compile(r"^[ \t]*```output[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _is_program(text: str) -> bool:
    """Parses as Python and does something: not only bare names/constants (plain prose like
    "Paris" or "42" parses too, and running it would print nothing)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return any(not isinstance(node, ast.Expr) or isinstance(node.value, ast.Call) for node in tree.body)


def extract_program(text: str) -> str | None:
    """The program of a model's reply: its first ```python (or py/python3) block — up to the end
    of the reply when the block is unterminated (a reply cut at its budget still runs, and its
    error can be repaired) — else the whole reply when it is a Python program; None otherwise."""
    opening = _OPEN.search(text)
    if opening is not None:
        start = opening.end() + 1
        closing = _FENCE_LINE.search(text, start)
        code = textwrap.dedent(text[start : closing.start() if closing else len(text)]).strip("\n")
        return code if code.strip() else None
    whole = text.strip("\n")
    if whole.strip() and _FENCE_LINE.search(whole) is None and _is_program(whole):
        return textwrap.dedent(whole)
    return None


def _tail(text: str, limit: int) -> str:
    """The last ``limit`` characters from a line start, with a note of what was cut."""
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    newline = cut.find("\n")
    if 0 <= newline < len(cut) - 1:
        cut = cut[newline + 1 :]
    return f"[… earlier output cut]\n{cut}"


def _fenced(tag: str, text: str) -> str:
    """``text`` in a ```tag block; a line starting with ``` gets a leading space so it cannot
    close the block, and control characters (which would break replay keys) become U+FFFD."""
    lines = _CONTROL.sub("\ufffd", text.replace("\r\n", "\n")).rstrip("\n").split("\n")
    body = "\n".join(f" {line}" if line.startswith("```") else line for line in lines)
    return f"```{tag}\n{body}\n```" if body else f"```{tag}\n```"


def _stable(text: str) -> str:
    """``text`` without what differs between two runs of the same program: the sandbox's random
    folder (shown as ``program.py``) and the sandbox bootstrap's own traceback frames. Why: the
    reply enters the next hop's prompt, whose replay key must not change when a tree is re-recorded."""
    return _BOOTSTRAP_FRAMES.sub(r"\1", _SANDBOX_FILE.sub("program.py", text))


def _status_line(result: SandboxResult, timeout_s: float, memory_mb: int) -> str:
    code = "no exit status" if result.returncode is None else f"exit status {result.returncode}"
    detail = {
        "timeout": f"stopped after {timeout_s:g} s",
        "memory": f"over the {memory_mb} MiB limit, {code}",
        "incomplete": f"{code} before the end of the program",
    }.get(result.reason, code)
    return f"Status: {result.reason} ({detail})."


def compose_reply(
    code: str, result: SandboxResult, *, timeout_s: float, memory_mb: int, output_chars: int
) -> str:
    """The member's reply: the program, the tail of its stdout, and — unless it ran cleanly — a
    status line and the tail of its stderr, so that a later hop sees why it failed."""
    parts = [_fenced("python", code), _fenced("output", _tail(_stable(result.stdout), output_chars))]
    if result.reason != "ok":
        parts.append(_status_line(result, timeout_s, memory_mb))
        if result.stderr.strip():
            parts.append(_fenced("error", _tail(_stable(result.stderr), output_chars)))
    return "\n".join(parts)


def program_trace(reply: str) -> ProgramTrace:
    """What ran for a program member's reply (``compose_reply``'s form), read off the text alone;
    a reply in any other form held no program (status ``NO_PROGRAM``)."""
    match = _COMPOSED.match(reply)
    if match is None:
        return ProgramTrace(code="", output="", status=NO_PROGRAM, returncode=None, error="")
    status_line = match.group("status")
    returncode: int | None
    if status_line is None:
        status, returncode = "ok", 0
    else:
        status = status_line.removeprefix("Status: ").split(" ", 1)[0]
        found = _EXIT_STATUS.search(status_line)
        returncode = int(found.group(1)) if found else None
    return ProgramTrace(
        code=match.group("code").removesuffix("\n"),
        output=match.group("output").removesuffix("\n"),
        status=status,
        returncode=returncode,
        error=(match.group("error") or "").removesuffix("\n"),
    )


def last_output_line(text: str) -> str | None:
    """The last non-empty line of the LAST ```output block of ``text``, stripped; None when the
    text has no output block. "" when the block is empty (the program printed nothing)."""
    blocks = _OUTPUT_BLOCK.findall(text)
    if not blocks:
        return None
    lines = [line.strip() for line in blocks[-1].split("\n") if line.strip()]
    return lines[-1] if lines else ""
