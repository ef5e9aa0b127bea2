"""How deeply a file's code nests, measured by one linear scan before libcst parses it.

libcst's native parser keeps, for every level of a nested expression, a copy of the
tree below it until the parse ends: its memory grows with the square of the nesting
and adds up over the file (``x = ---...-1`` with 5,000 ``-``: 1.4 GB; a thousand lines
of ``-(`` nested 50 deep: 3 GB), and about 2,000 nested brackets or a 20,000-branch
``elif`` chain overflow its stack and kill the process. :func:`nesting_problem` names
the file's problem when it is past :data:`MAX_DEPTH`, :data:`MAX_COST` or
:data:`MAX_ELIF_CHAIN`, so that such a file is reported and never parsed.

The scan tokenizes as Python 3.12 does (PEP 701: an f-string's replacement fields are
code and may reuse its quotes), whatever interpreter runs it. One level is an open
bracket (a call or a subscript too), an f-string and each of its replacement fields,
and each operator that makes the parser recurse into what follows it: unary ``- + ~``,
``not``, ``await``, ``lambda``, ``*`` / ``**`` unpacking, right-associative ``**`` and
the ``if`` of a conditional expression. Left-associative chains (``a + b + c``,
``a.b.c``, ``x and y``) are loops in the parser and do not count. ``,`` ``;`` ``=``
``:`` and the end of a logical line close what the current bracket had open (back to
the innermost unfinished ``lambda``). That bounds the parser's recursion from above.
The cost is the sum over tokens of how far they lie deeper than :data:`FREE_DEPTH`: a
nested expression costs about the square of its depth, flat code nothing.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

#: Deepest nesting accepted. CPython refuses 200 nested brackets; of SGLang's and
#: vLLM's 8,300 files the deepest measures 19.
MAX_DEPTH = 100
#: Tokens this deep or shallower cost nothing: flat code's parse memory is linear.
FREE_DEPTH = 8
#: Largest cost accepted: the sum over tokens of how far they lie deeper than
#: :data:`FREE_DEPTH` (the costliest of SGLang's and vLLM's files: 321; a call nested
#: 98 deep costs 12,000 and takes libcst 20 MB).
MAX_COST = 20_000
#: Longest ``elif`` chain accepted (libcst nests each ``elif`` in the one before; the
#: longest in SGLang and vLLM: 38).
MAX_ELIF_CHAIN = 2_000

_CODE = re.compile(
    r"""
     (?P<ws>[ \t\f]+|\\\r?\n|\\\r)
    |(?P<nl>\r\n|\r|\n)
    |(?P<comment>\#[^\r\n]*)
    |(?P<string>(?P<prefix>[rRbBuUfFtT]{1,2})?(?P<quote>'''|\"\"\"|'|"))
    |(?P<name>[^\W\d]\w*)
    |(?P<number>\.?\d(?:[\w.]|(?<=[eE])[-+])*)
    |(?P<sep>,|;|->|:(?!=)|=(?!=)|(?:\*\*|//|>>|<<|[-+*/%@&|^])=)
    |(?P<open>[(\[{])
    |(?P<close>[)\]}])
    |(?P<op>\*\*|//|<<|>>|:=|\.\.\.|[<>=!]=|[-+*/%@&|^~<>.!])
    |(?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
#: The body of a plain (not f-) string after its opening quote, through its closing one.
_PLAIN = {
    "'": re.compile(r"(?:[^'\\\r\n]|\\.)*'?", re.DOTALL),
    '"': re.compile(r'(?:[^"\\\r\n]|\\.)*"?', re.DOTALL),
    "'''": re.compile(r"(?:[^'\\]|\\.|'(?!''))*(?:''')?", re.DOTALL),
    '"""': re.compile(r'(?:[^"\\]|\\.|"(?!""))*(?:""")?', re.DOTALL),
}
#: Literal text of an f-string, up to a replacement field, its closing quote or a bare newline.
_FLITERAL = {
    "'": re.compile(r"(?:[^'\\{}\r\n]|\\N\{[^}\r\n]*\}|\\.|\{\{|\}\})*", re.DOTALL),
    '"': re.compile(r'(?:[^"\\{}\r\n]|\\N\{[^}\r\n]*\}|\\.|\{\{|\}\})*', re.DOTALL),
    "'''": re.compile(r"(?:[^'\\{}]|\\N\{[^}]*\}|\\.|'(?!'')|\{\{|\}\})*", re.DOTALL),
    '"""': re.compile(r'(?:[^"\\{}]|\\N\{[^}]*\}|\\.|"(?!"")|\{\{|\}\})*', re.DOTALL),
}
#: A format spec's literal text (after ``:`` in a replacement field), up to a nested
#: field, the end of its own, or its f-string's quote or a bare newline (a syntax error).
_SPEC = {
    "'": re.compile(r"(?:[^'\\{}\r\n]|\\.)*", re.DOTALL),
    '"': re.compile(r'(?:[^"\\{}\r\n]|\\.)*', re.DOTALL),
    "'''": re.compile(r"(?:[^'\\{}]|\\.|'(?!''))*", re.DOTALL),
    '"""': re.compile(r'(?:[^"\\{}]|\\.|"(?!""))*', re.DOTALL),
}
_RESETS = frozenset({"for", "async", "return", "yield", "from", "import", "as", "del", "assert", "raise"})
_OPERANDS = frozenset({"True", "False", "None"})
_KEYWORDS = frozenset(keyword.kwlist) - _OPERANDS
#: Operators that nest what follows them when they start an operand (``-x``, ``*args``).
_PREFIX = frozenset({"-", "+", "~", "*", "**"})


class _Frame:
    """One open bracket, f-string, replacement field or format spec."""

    __slots__ = ("kind", "base", "chain", "lambdas", "quote", "operand")

    def __init__(self, kind: str, base: int, quote: str = "") -> None:
        self.kind = kind  # "code" (the file or a bracket), "field", "fstring", "spec"
        self.base = base
        #: levels open since the last separator of this bracket
        self.chain = 0
        #: chain values at each ``lambda`` whose ``:`` is still to come
        self.lambdas: list[int] = []
        #: the quote of the f-string a "fstring", "field" or "spec" frame lies in
        self.quote = quote
        #: the last token ended an operand (so ``-`` is binary, ``(`` a call)
        self.operand = False

    def reset(self) -> None:
        self.chain = self.lambdas[-1] if self.lambdas else 0
        self.operand = False


@dataclass(frozen=True)
class Nesting:
    """What :func:`measure` found: the deepest level, the cost, the longest ``elif`` chain."""

    depth: int
    cost: int
    elif_chain: int


def measure(text: str) -> Nesting:
    """The deepest nesting, the total cost and the longest ``elif`` chain of ``text``."""
    stack = [_Frame("code", 0)]
    pos, end = 0, len(text)
    max_depth = cost = 0
    elif_chains: dict[int, int] = {}  # statement column -> elifs in a row there
    max_elif = 0
    line_start = True  # at the first token of a logical line
    line_pos = 0
    code_match = _CODE.match
    while pos < end:
        top = stack[-1]
        if top.kind == "fstring":
            pos = _FLITERAL[top.quote].match(text, pos).end()
            if text.startswith(top.quote, pos):
                pos += len(top.quote)
                stack.pop()
            elif pos < end and text[pos] == "{":
                pos += 1
                stack.append(_Frame("field", top.base + 1, top.quote))
            elif pos < end and text[pos] == "}":
                pos += 1  # a lone '}': a syntax error for the parser
            else:  # a newline ends a one-line f-string, or the file ends
                stack.pop()
            continue
        if top.kind == "spec":
            pos = _SPEC[top.quote].match(text, pos).end()
            if pos < end and text[pos] == "{":
                pos += 1
                stack.append(_Frame("field", top.base + 1, top.quote))
                continue
            if pos < end and text[pos] == "}":
                pos += 1  # the end of the spec and of its replacement field
            stack.pop()  # else the quote or newline is the f-string's to read
            if stack[-1].kind == "field":
                stack.pop()
            continue
        m = code_match(text, pos)
        kind = m.lastgroup
        pos = m.end()
        if kind == "ws" or kind == "comment":
            continue
        if kind == "nl":
            if len(stack) == 1:
                top.lambdas.clear()
                top.reset()
                line_start = True
                line_pos = pos
            continue
        token = m.group()
        if line_start:
            line_start = False
            column = m.start() - line_pos
            for col in [c for c in elif_chains if c > column]:
                del elif_chains[col]
            if token == "elif":
                elif_chains[column] = elif_chains.get(column, 0) + 1
                max_elif = max(max_elif, elif_chains[column])
            elif token != "else":
                elif_chains[column] = 0
        depth = top.base + top.chain
        if kind == "string":
            prefix = (m.group("prefix") or "").lower()
            quote = m.group("quote")
            top.operand = True
            if "f" in prefix or "t" in prefix:
                stack.append(_Frame("fstring", depth + 1, quote))
                depth += 1
            else:
                pos = _PLAIN[quote].match(text, pos).end()
        elif kind == "name":
            if token not in _KEYWORDS:
                top.operand = True
            elif token == "lambda":
                top.chain += 1
                top.lambdas.append(top.chain)
                top.operand = False
            elif token in _RESETS:
                top.reset()
            else:
                if token == "await" or token == "if" or (token == "not" and not top.operand):
                    top.chain += 1  # right-nesting: the operand (or else-branch) is parsed inside
                top.operand = False
        elif kind == "number":
            top.operand = True
        elif kind == "sep":
            if token == ":" and top.lambdas:
                top.lambdas.pop()  # the lambda's body is nested in it: keep the chain
                top.operand = False
            elif token == ":" and top.kind == "field":
                stack.append(_Frame("spec", depth, top.quote))
            else:
                top.reset()
        elif kind == "open":
            top.operand = True  # what the bracket holds is one operand
            stack.append(_Frame("code", depth + 1))
            depth += 1
        elif kind == "close":
            if top.kind == "field" and token == "}":
                stack.pop()
            elif len(stack) > 1 and top.kind == "code":
                stack.pop()
        elif kind == "op":
            if token == "**" or (token in _PREFIX and not top.operand):
                top.chain += 1  # a unary operator, an unpacking, or right-associative '**'
            top.operand = False
        depth = max(depth, stack[-1].base + stack[-1].chain)
        if depth > FREE_DEPTH:
            cost += depth - FREE_DEPTH
        if depth > max_depth:
            max_depth = depth
    return Nesting(max_depth, cost, max_elif)


def nesting_problem(text: str) -> str | None:
    """Why ``text`` must not be parsed (too deep, too costly, too long an ``elif``
    chain), or ``None``."""
    found = measure(text)
    if found.depth > MAX_DEPTH:
        return f"expression nested {found.depth} deep (limit {MAX_DEPTH})"
    if found.elif_chain > MAX_ELIF_CHAIN:
        return f"elif chain {found.elif_chain} long (limit {MAX_ELIF_CHAIN})"
    if found.cost > MAX_COST:
        return (
            f"expressions nested too deep: they cost {found.cost} (limit {MAX_COST}; "
            f"the sum over tokens of their depth beyond {FREE_DEPTH})"
        )
    return None
