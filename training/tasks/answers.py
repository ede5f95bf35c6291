"""Answer extraction: the option, number, MATH expression or code a reply states.

Why a module of its own: what a verbose, multi-hop reply *answers* is decided here once, with
the precedence rules below, and ``training/tasks/metrics.py`` only compares the extracted answer with
the gold. When several answers are stated, the LAST explicit answer statement wins, because the
later hop is the one that had the chance to correct the earlier one.

Multiple choice (``extract_choice``), in order of precedence:

1. explicit statements, last one wins: ``Answer: B``, ``answer is (B)``, ``correct option is B``,
   ``I choose B``, ``\\boxed{B}`` (the letter must be upper case: "the answer is a ..." is
   English, not option A);
2. a line that is only a letter (``B``, ``B.``, ``(B)``, ``**B**``), last one wins; a line
   *starting* with a letter marker (``B. text`` / ``B) text``) only counts when the reply names
   no other letter that way, since several such lines are an echo of the option list;
3. the full text of exactly one option appearing in the reply (case-insensitive, whole words);
4. a parenthesised letter ``(B)`` anywhere, last one wins.

GSM8K (``extract_number``): the last of ``#### N``, ``\\boxed{N}`` and ``answer is/: N``;
otherwise the last number in the reply. Numbers lose ``$``, ``%``, thousands commas and a
trailing period, and compare as decimals (``18.0 == 18``).

MATH (``extract_math_answer`` / ``normalize_math_answer``): the last ``\\boxed{...}``/``\\fbox``
with balanced braces, else the text after the last "final answer is". Normalisation drops
spaces, ``\\left``/``\\right``, ``\\!``/``\\,``/``\\;``, ``$``, ``\\%``, degree marks, a trailing
period, ``\\text{...}`` units after a value (other ``\\text{x}`` become ``x``), a leading
``x =``, and thousands commas; it maps ``\\dfrac``/``\\tfrac`` to ``\\frac``, ``\\frac12`` to
``\\frac{1}{2}``, ``\\sqrt2`` to ``\\sqrt{2}``, ``.5`` to ``0.5`` and ``a/b`` to ``\\frac{a}{b}``.
Two answers match when the normalised strings are equal or both are plain numbers (integers,
decimals, ``\\frac{a}{b}``, ``a/b``, optionally negative) with the same exact rational value.

Program output (all three extractors above): when a reply holds a ```output block — what a
program-aided member's program printed (``hierrouter_graph/members/program_reply.py``), or an output block
a chat model wrote itself — the answer is read from the LAST output block's last non-empty line
only, by the same rules (a MATH line without ``\\boxed``/"final answer is" is the answer as it
stands). No fallback to the rest of the reply: a program that failed or printed nothing answers
nothing, and its code and traceback hold numbers and letters that are not answers. Replies
without an output block are read exactly as before.

Code (``extract_code``): the last fenced block tagged python/py/python3, else the last fenced
block of any tag, else the whole reply; an unterminated final fence (a truncated reply) counts
up to the end.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from hierrouter_graph.members.program_reply import last_output_line

__all__ = [
    "MC_LETTERS",
    "extract_choice",
    "extract_code",
    "extract_math_answer",
    "extract_number",
    "math_equal",
    "normalize_math_answer",
    "numbers_equal",
]

MC_LETTERS = "ABCDEFGHIJ"
"""Option letters of multiple-choice items, in order (``references[0]`` is one of them)."""

# --------------------------------------------------------------------------------------------
# Multiple choice
# --------------------------------------------------------------------------------------------


@functools.cache
def _choice_patterns(n_options: int) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    letters = f"[{MC_LETTERS[:n_options]}]"
    explicit = re.compile(
        r"(?:(?i:\b(?:final\s+|correct\s+|right\s+|best\s+)?answer\b"
        r"|\bcorrect\s+(?:option|choice)\b|\bbest\s+(?:option|choice)\b"
        r"|\bI\s+(?:choose|pick|select|go\s+with)\b)"
        r"(?i:\s*(?:is|would\s+be|should\s+be|will\s+be|must\s+be)?\s*[:=\-]?"
        r"\s*(?:option|choice|letter)?)[\s*_\"'(\[]*"
        rf"|\\boxed\{{\s*(?:\\text\{{)?)({letters})(?![A-Za-z0-9])"
    )
    line_marker = re.compile(
        rf"^[ \t>*_#]*(?:\(({letters})\)|({letters})(?:[.):]|(?=[ \t*_]*$)))(.*)$", re.MULTILINE
    )
    paren = re.compile(rf"\(({letters})\)")
    return explicit, line_marker, paren


def _option_index(text: str, choices: Sequence[str]) -> int | None:
    haystack = " ".join(text.lower().split())
    found = []
    for index, choice in enumerate(choices):
        needle = " ".join(str(choice).lower().split())
        if needle and re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack):
            found.append(index)
    # Several options present means the reply discusses or echoes them: no decision here.
    return found[0] if len(found) == 1 else None


def extract_choice(text: str, choices: Sequence[str] | int = 4) -> int | None:
    """Index of the option a (possibly verbose, multi-reply) text answers, or None.

    ``choices`` is the list of option texts (enables rule 3) or just their number.
    See the module docstring for the precedence of the rules.
    """
    output = last_output_line(text)
    return _choice_in(text if output is None else output, choices)


def _choice_in(text: str, choices: Sequence[str] | int) -> int | None:
    n_options = choices if isinstance(choices, int) else len(choices)
    n_options = max(1, min(n_options, len(MC_LETTERS)))
    explicit, line_marker, paren = _choice_patterns(n_options)

    hits = list(explicit.finditer(text))
    if hits:
        return MC_LETTERS.index(hits[-1].group(1))

    markers = [(m.group(1) or m.group(2), m.group(3)) for m in line_marker.finditer(text)]
    bare = [letter for letter, rest in markers if not rest.strip(" \t*_.):")]
    if bare:
        return MC_LETTERS.index(bare[-1])
    if markers and len({letter for letter, _ in markers}) == 1:
        return MC_LETTERS.index(markers[-1][0])

    if not isinstance(choices, int):
        index = _option_index(text, choices)
        if index is not None:
            return index

    hits = list(paren.finditer(text))
    if hits:
        return MC_LETTERS.index(hits[-1].group(1))
    return None


# --------------------------------------------------------------------------------------------
# Numbers (GSM8K)
# --------------------------------------------------------------------------------------------

_NUMBER = r"-?(?:\$\s?)?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUMBER})")
_NUMBER_STATEMENTS = (
    re.compile(rf"####\s*(?P<n>{_NUMBER})"),
    re.compile(rf"(?i:\banswer\b)(?:\s+is|\s*:)?[\s:=*$]*(?P<n>{_NUMBER})"),
)


_BRACE_TOKENS = re.compile(r"\\(?:boxed|fbox)\s*\{|[{}]")


def _boxed_spans(text: str) -> list[tuple[int, str]]:
    """(position, content) of every ``\\boxed{...}``/``\\fbox{...}`` with balanced braces.

    One pass over the braces with a stack of open boxes: linear in the reply, so a reply with
    thousands of unclosed ``\\boxed{`` (a model looping) costs milliseconds, not minutes.
    """
    spans: list[tuple[int, str]] = []
    open_boxes: list[tuple[int, int, int]] = []  # (depth inside the box, content start, box start)
    depth = 0
    for token in _BRACE_TOKENS.finditer(text):
        if token.group() == "}":
            if open_boxes and open_boxes[-1][0] == depth:
                _, start, pos = open_boxes.pop()
                spans.append((pos, text[start : token.start()]))
            depth = max(0, depth - 1)
            continue
        depth += 1
        if token.group() != "{":
            open_boxes.append((depth, token.end(), token.start()))
    return sorted(spans)


def _clean_number(raw: str) -> Decimal | None:
    cleaned = raw.replace("$", "").replace(",", "").replace("%", "").replace(" ", "")
    cleaned = cleaned.rstrip(".")
    if cleaned.startswith("-."):
        cleaned = "-0" + cleaned[1:]
    elif cleaned.startswith("."):
        cleaned = "0" + cleaned
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def extract_number(text: str) -> str | None:
    """The final numeric answer of a reply (see module docstring), as written."""
    output = last_output_line(text)
    return _number_in(text if output is None else output)


def _number_in(text: str) -> str | None:
    candidates: list[tuple[int, str]] = []
    for pattern in _NUMBER_STATEMENTS:
        candidates += [(m.start(), m.group("n")) for m in pattern.finditer(text)]
    for pos, content in _boxed_spans(text):
        numbers = _NUMBER_RE.findall(content.replace("{,}", ","))
        if numbers:
            candidates.append((pos, numbers[-1]))
    if candidates:
        return max(candidates, key=lambda c: c[0])[1].strip()
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1].strip() if numbers else None


def numbers_equal(a: str, b: str) -> bool:
    """Numeric equality after removing ``$``, ``%``, thousands commas and a trailing period."""
    x, y = _clean_number(a), _clean_number(b)
    return x is not None and y is not None and x == y


# --------------------------------------------------------------------------------------------
# MATH
# --------------------------------------------------------------------------------------------

_FINAL_ANSWER = re.compile(r"(?i:final\s+answer\s*(?:is|:))")
_ANSWER_END = re.compile(r"\.\s|\n|\.?\s*\Z")


def extract_math_answer(text: str) -> str | None:
    """Last balanced ``\\boxed{}`` content, else the text after the last "final answer is"
    (a program's output line: the same, else the line itself)."""
    output = last_output_line(text)
    if output is not None:
        return _math_answer_in(output) or output.strip("$ ") or None
    return _math_answer_in(text)


def _math_answer_in(text: str) -> str | None:
    spans = _boxed_spans(text)
    if spans:
        return spans[-1][1].strip()
    statements = list(_FINAL_ANSWER.finditer(text))
    if not statements:
        return None
    rest = text[statements[-1].end() :]
    end = _ANSWER_END.search(rest)
    answer = rest[: end.start() if end else len(rest)].strip().strip("$").strip()
    return answer or None


def _strip_text_units(s: str) -> str:
    # "5\text{ cm}" -> "5": a trailing \text{...} of letters after a value is a unit.
    s = re.sub(r"(?<=\S)\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z\s^.]*\}\s*$", "", s)
    # Any other \text{x} is just formatting.
    return re.sub(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}", r"\1", s)


def normalize_math_answer(answer: str) -> str:
    """Canonical string for a MATH answer (see module docstring for every rule)."""
    s = answer.strip().replace("\n", " ")
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", s)
    for token in ("\\!", "\\,", "\\;", "\\:", "\\ "):
        s = s.replace(token, " ")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s).replace("\\circ", "").replace("°", "")
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "")
    s = _strip_text_units(s)
    s = re.sub(r"\s+", "", s)
    s = s.replace("{,}", ",")
    s = s.rstrip(".")
    equation = re.fullmatch(r"[A-Za-z]\w?=(.+)", s)
    if equation:
        s = equation.group(1)
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\{([^{}]+)\}(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    s = re.sub(r"^(-?)\.(\d)", r"\g<1>0.\2", s)
    fraction = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if fraction:
        s = f"\\frac{{{fraction.group(1)}}}{{{fraction.group(2)}}}"
    return s


def _as_rational(s: str) -> Fraction | None:
    sign = 1
    if s.startswith("-"):
        sign, s = -1, s[1:]
    frac = re.fullmatch(r"\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", s)
    try:
        if frac:
            denominator = Fraction(frac.group(2))
            if denominator == 0:
                return None
            return sign * Fraction(frac.group(1)) / denominator
        if re.fullmatch(r"\d+(?:\.\d+)?", s):
            return sign * Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def math_equal(predicted: str, gold: str) -> bool:
    """Equality of two MATH answers after normalisation, numerically when both are numbers."""
    a, b = normalize_math_answer(predicted), normalize_math_answer(gold)
    if not a or not b:
        return False
    if a == b:
        return True
    x, y = _as_rational(a), _as_rational(b)
    return x is not None and x == y


# --------------------------------------------------------------------------------------------
# Code (MBPP, HumanEval)
# --------------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+\-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str:
    """The code of a reply: last python-tagged fence, else last fence, else the whole text."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    python_blocks = [code for tag, code in blocks if tag in ("python", "py", "python3")]
    if python_blocks:
        return python_blocks[-1]
    if blocks:
        return blocks[-1][1]
    return text
