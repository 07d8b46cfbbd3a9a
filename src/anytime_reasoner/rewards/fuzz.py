"""Hostile model outputs for the grader, and traps proving that none of them is ever executed.

Used by ``tests/rewards/test_grader_fuzz.py`` (driven by hypothesis' seeded ``random.Random``) and
by ``scripts/fuzz_grader.py`` (a plain ``random.Random(seed)``). Pure Python: nothing here imports
sympy or runs a payload; the generators only build strings, with a bounded number of ``rng`` calls
per case (megabyte strings are built by repetition).

Generation: :func:`hostile_case` picks an answer family (:data:`FAMILIES`: deep nesting, power
towers, huge exponents and factorials, long digit strings, Unicode look-alikes, megabyte strings,
broken LaTeX, code-looking answers and the payload shapes of the public advisory about ``eval``
in graders) and a response shape around it (a well-formed Final Answer box, megabyte thinking, a
missing or doubled ``</think>``, an unclosed box, no box). Each :class:`Case` carries a ground
truth its answer can never equal, so a correct grade is always a grader bug:

* code-looking answers are graded against ``0``, the value ``os.system`` returns, so a grader that
  evaluated them would score them correct;
* a look-alike is graded against the ASCII text it imitates: the grader compares symbols, not
  glyphs (Cyrillic ``х`` is not ``x``, fullwidth ``４２`` is not ``42``, a zero-width joiner is
  not nothing); the Unicode minus sign and non-breaking spaces are real spellings, never generated;
* every other answer is built from non-negative literals, so it is graded against a negative integer.

Traps: :func:`install_traps` is a grading-worker initializer
(``MathVerifier(worker_initializer=functools.partial(install_traps, path))``). From then on, in
that worker, ``os.system``, ``os.popen``, the ``os.exec*``/``os.spawn*``/``os.posix_spawn*``
family, ``os.fork`` and ``subprocess.Popen`` never run: they append a line to ``path`` and raise
:class:`ExecutionTrapped`. ``eval`` and ``exec`` cannot simply be refused, because the grading
libraries call them on their own text: latex2sympy reads each number token through
``sympy.Number(text)``, which ``eval``\\s ``"Integer (12 )"``; sympy ``exec``\\s ``"from sympy import
*"`` and generated monomial code, and imports run module code objects. So they are trapped only
when the source looks like code a payload would bring: it parses (``ast``, never run) to a
``lambda``, an import other than ``from sympy import …``, a dunder name or attribute, or a name
such as ``system``, ``open``, ``eval``, ``getattr``, ``os``; a code object counts when it was
compiled from a string (not a file) and names any of those. Calls from the standard library's own
code generators (``dataclasses``, ``collections.namedtuple``, ``typing``, ``enum``, ``importlib``)
pass: their source is the library's template, not input.
"""

from __future__ import annotations

import ast
import builtins
import os
import random
import re
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from anytime_reasoner.rewards.extract import ANSWER_MARKER, PARAGRAPH_BREAK, THINK_END

DEFAULT_CANARY = "/tmp/pwned"  # the file the advisory's payloads touch; traps keep it from appearing
CANARY_TOKEN = "@CANARY@"
BOX_NAMES = ("\\boxed", "\\fbox")
MEGABYTE = 1 << 20
BOX_SAFE_LIMIT = 100_000
_BRACE_OR_ESCAPE = re.compile(r"\\.|\\|[{}]", re.DOTALL)  # an escape pair, a lone (trailing) backslash, a brace
Family = Callable[[random.Random], tuple[str, str]]  # rng -> (answer, ground truth)


@dataclass(frozen=True)
class Case:
    """One hostile response, its ground truth, and what extraction must give for it."""

    family: str
    shape: str  # the response shape around the answer (see SHAPES)
    response: str
    truth: str
    well_formed: bool  # exactly one think-end marker
    expected: str | None  # what extract_answer must return, when known (see expected_known)
    expected_known: bool


# ---- answer families ------------------------------------------------------------------------


def _negative(rng: random.Random) -> str:
    return f"-{rng.randint(1, 999)}"


def nested_braces(rng: random.Random) -> tuple[str, str]:
    """``{{{…{7}…}}}``, ``\\frac{\\frac{…}{…}}{…}``, ``\\sqrt{\\sqrt{…}}`` or ``\\left(\\left(…``, shallow to thousands deep."""
    depth = rng.choice([rng.randint(1, 30), rng.randint(100, 300), rng.randint(1000, 3000)])
    core = str(rng.randint(0, 99))
    kind = rng.randrange(4)
    if kind == 0:
        answer = "{" * depth + core + "}" * depth
    elif kind == 1:
        answer = "\\frac{" * depth + core + "}{" + str(rng.randint(1, 9)) + "}" + ("}{2}" * (depth - 1))
    elif kind == 2:
        answer = "\\sqrt{" * depth + core + "}" * depth
    else:
        answer = "\\left(" * depth + core + "\\right)" * depth
    return answer, _negative(rng)


def power_tower(rng: random.Random) -> tuple[str, str]:
    """``b^{b^{b^{…}}}`` (braced, bare ``b^b^b`` or parenthesised), 1 to 60 levels."""
    base, height = str(rng.randint(2, 99)), rng.randint(1, 60)
    kind = rng.randrange(3)
    if kind == 0:
        answer = f"{base}^{{" * height + base + "}" * height
    elif kind == 1:
        answer = "^".join([base] * (height + 1))
    else:
        answer = f"({base})^{{(" * height + base + ")}" * height
    return answer, _negative(rng)


def huge_number(rng: random.Random) -> tuple[str, str]:
    """Huge exponents and factorials: ``10^{10^{100}}``, ``1000000!``, ``(10^{9})!``, binomials of them."""
    k, m = rng.randint(2, 100), rng.randint(1000, 1_000_000)
    templates = [
        "10^{10^{100}}",
        "1000000!",
        f"10^{{10^{{{k}}}}}",
        f"{m}!",
        f"{m}!!",
        f"(10^{{{k}}})!",
        f"{rng.randint(2, 9)}^{{{rng.getrandbits(64)}}}",
        f"\\binom{{10^{{{k}}}}}{{10^{{{rng.randint(2, 9)}}}}}",
        f"\\sqrt[{k}]{{10^{{10^{{{k}}}}}}}",
        f"{m}!^{{{m}!}}",
        f"\\frac{{10^{{10^{{{k}}}}}}}{{{m}!}}",
    ]
    return rng.choice(templates), _negative(rng)


def long_digits(rng: random.Random) -> tuple[str, str]:
    """Digit strings of 50 to 20 000 digits (the answer cap is 2000 chars), plain, decimal or grouped."""
    length = rng.choice([rng.randint(50, 1999), rng.randint(2001, 20_000)])
    digits = (str(rng.getrandbits(4096)) * (length // 1200 + 1))[:length]
    kind = rng.randrange(4)
    if kind == 0:
        return digits, _negative(rng)
    if kind == 1:
        return "0." + digits, _negative(rng)
    if kind == 2:
        return "1" + "0" * length, _negative(rng)
    return "\\,".join(digits[i : i + 3] for i in range(0, len(digits), 3)), _negative(rng)


FULLWIDTH = {str(d): chr(0xFF10 + d) for d in range(10)}
ARABIC_INDIC = {str(d): chr(0x0660 + d) for d in range(10)}
CYRILLIC = dict(zip("aceopxyABCEHKMOPTX", "асеорхуАВСЕНКМОРТХ", strict=True))
MATH_ITALIC = {c: chr(0x1D44E + i) for i, c in enumerate("abcdefg")}  # 𝑎 … 𝑔
INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u202e", "\u0301")  # ZWSP ZWNJ ZWJ WJ BOM RLO acute
LOOKALIKE_BASES = ("42", "x+1", "\\frac{a}{b}", "3.14", "2x^2+3", "y=2", "12345", "(a, c)", "\\sqrt{7}", "e^{x}")


def unicode_lookalike(rng: random.Random) -> tuple[str, str]:
    """An ordinary answer with look-alike characters: fullwidth or Arabic-Indic digits, Cyrillic or
    mathematical-italic letters, zero-width characters, a right-to-left override; graded against the original."""
    base = rng.choice([*LOOKALIKE_BASES, str(rng.randint(0, 10**6))])
    table = rng.choice([FULLWIDTH, ARABIC_INDIC, CYRILLIC, MATH_ITALIC, {}])
    swapped = "".join(table.get(c, c) for c in base)
    chars = list(swapped)
    if swapped == base or rng.random() < 0.5:  # make sure something changed
        for _ in range(rng.randint(1, 3)):
            chars.insert(rng.randint(0, len(chars)), rng.choice(INVISIBLE))
    return "".join(chars), base


def megabyte_string(rng: random.Random) -> tuple[str, str]:
    """1 to 2 MB answers: braces, unclosed boxes, backslashes, repeated junk (all over the answer cap)."""
    size = rng.randint(MEGABYTE, 2 * MEGABYTE)
    chunk = rng.choice(["{", "}", "{}", "\\boxed{", "\\\\", "\\frac{1}{", "9^", "x+", "\\left(", "$", "é", "\u200d"])
    junk = "".join(rng.choice("0123456789{}^_\\()+x ") for _ in range(16))
    unit = rng.choice([chunk, junk])
    return (unit * (size // len(unit) + 1))[:size], _negative(rng)


BROKEN_FRAGMENTS = (
    "\\left(",
    "\\right)",
    "\\left[",
    "{",
    "}",
    "\\frac{",
    "\\frac{1}{",
    "\\sqrt[",
    "^",
    "_",
    "^{",
    "\\begin{matrix}",
    "\\end{pmatrix}",
    "&",
    "\\\\",
    "$",
    "$$",
    "\\",
    "\\boxed{",
    "\\text{",
    "%",
    "#",
    "~",
    "\\(",
    "\\]",
    "\\}",
    "\\{",
    "\\undefinedmacro",
    "\\int_",
    "\\sum^{",
    "\\lim_{x\\to",
    "'",
    '"',
    "`",
    "\x00",
    "\n",
)


def broken_latex(rng: random.Random) -> tuple[str, str]:
    """Unbalanced braces, ``\\left(`` without ``\\right``, unfinished commands and environments, control bytes."""
    parts = [rng.choice(BROKEN_FRAGMENTS) if rng.random() < 0.7 else str(rng.randint(0, 99)) for _ in range(rng.randint(1, 40))]
    return "".join(parts), _negative(rng)


CODE_PAYLOADS = (
    # the public advisory's shapes: model output handed to eval by a grader
    "__import__('os').system('touch @CANARY@')",
    '__import__("os").system("touch @CANARY@")',
    "().__class__.__bases__[0].__subclasses__()",
    "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0](['touch', '@CANARY@'])",
    # other code-looking answers
    "os.system('touch @CANARY@')",
    "import os; os.system('touch @CANARY@')",
    "lambda: 0",
    "(lambda: __import__('os').system('touch @CANARY@'))()",
    "exec(\"import os; os.system('touch @CANARY@')\")",
    "eval(\"__import__('os').system('touch @CANARY@')\")",
    "eval('0')",
    "open('@CANARY@', 'w').write('x')",
    "getattr(__builtins__, 'exec')(\"open('@CANARY@', 'w')\")",
    "__import__('subprocess').Popen(['touch', '@CANARY@'])",
    "subprocess.run(['touch', '@CANARY@'])",
    "globals()['__builtins__']['eval']('0')",
    "Symbol('x').__class__.__init__.__globals__['os'].system('touch @CANARY@')",
    "breakpoint()",
    "`touch @CANARY@`",
    "$(touch @CANARY@)",
    "\\text{__import__('os').system('touch @CANARY@')}",
    "\\mathrm{eval}(\\text{__import__('os').system('touch @CANARY@')})",
    "\\operatorname{exec}(\\texttt{import os})",
)


def code_payload(rng: random.Random) -> tuple[str, str]:
    """Python-looking answers and the advisory's payloads (their shell commands touch the canary)."""
    return rng.choice(CODE_PAYLOADS), "0"


FAMILIES: dict[str, Family] = {
    "nested": nested_braces,
    "power_tower": power_tower,
    "huge_number": huge_number,
    "long_digits": long_digits,
    "lookalike": unicode_lookalike,
    "megabyte": megabyte_string,
    "broken_latex": broken_latex,
    "code": code_payload,
}

# ---- response shapes --------------------------------------------------------------------------

THINKING = ("Let me compute.", "Hmm, wait.", "So the answer is", "Check: 2+2=4.", "")
SHAPES = ("final_box", "megabyte_thinking", "no_think_end", "two_think_ends", "unclosed_box", "unboxed", "bare")


def _thinking(rng: random.Random, megabytes: bool) -> str:
    text = " ".join(rng.choice(THINKING) for _ in range(rng.randint(1, 4)))
    if megabytes:
        text = (text + " ...\n") * (MEGABYTE // (len(text) + 5) + 1)
    return text


def box_safe(answer: str) -> bool:
    """True when ``\\boxed{answer}`` closes exactly at its own brace and holds no other box or paragraph break.

    Answers over :data:`BOX_SAFE_LIMIT` characters count as not safe (their extraction is not predicted).
    """
    if len(answer) > BOX_SAFE_LIMIT or any(name in answer for name in BOX_NAMES) or PARAGRAPH_BREAK in answer:
        return False
    depth = 0
    for token in _BRACE_OR_ESCAPE.findall(answer):
        if token == "\\":  # a trailing backslash escapes the box's closing brace
            return False
        depth += {"{": 1, "}": -1}.get(token, 0)
        if depth < 0:
            return False
    return depth == 0 and bool(answer.strip())


def shape_response(rng: random.Random, answer: str, shape: str) -> tuple[str, bool, str | None, bool]:
    """``(response, well_formed, expected extraction, whether that expectation is known)``."""
    thinking = _thinking(rng, megabytes=shape == "megabyte_thinking")
    box = f"{ANSWER_MARKER}$\\boxed{{{answer}}}$"
    safe = box_safe(answer)
    if shape in ("final_box", "megabyte_thinking"):
        return f"{thinking}{THINK_END}\n\n{box}", True, answer.strip() if safe else None, safe
    if shape == "no_think_end":
        return f"{thinking}\n\n{box}", False, answer.strip() if safe else None, safe
    if shape == "two_think_ends":
        return f"{thinking}{THINK_END}{thinking}{THINK_END}\n\n{box}", False, answer.strip() if safe else None, safe
    if shape == "unclosed_box":
        return f"{thinking}{THINK_END}\n\n{ANSWER_MARKER}\\boxed{{{answer}", True, None, safe
    if shape == "unboxed":  # boxed in the thinking, bare in the Final Answer paragraph
        return f"\\boxed{{{answer}}}{THINK_END}\n\n{ANSWER_MARKER}{answer}", True, None, safe
    return answer, False, None, True  # bare: the answer alone, no marker (no family writes one)


def hostile_case(rng: random.Random, canary: str = DEFAULT_CANARY, family: str | None = None, shape: str | None = None) -> Case:
    """One hostile response: ``family``'s answer (random when None) in ``shape`` (random when None)."""
    family = family if family is not None else rng.choice(sorted(FAMILIES))
    shape = shape if shape is not None else rng.choice(SHAPES)
    answer, truth = FAMILIES[family](rng)
    answer = answer.replace(CANARY_TOKEN, canary)
    response, well_formed, expected, known = shape_response(rng, answer, shape)
    return Case(family, shape, response, truth, well_formed, expected, known)


def hostile_cases(n: int, seed: int = 0, canary: str = DEFAULT_CANARY) -> Iterator[Case]:
    """``n`` cases from ``random.Random(seed)``: the same seed gives the same cases."""
    rng = random.Random(seed)
    for _ in range(n):
        yield hostile_case(rng, canary)


# ---- traps ----------------------------------------------------------------------------------


class ExecutionTrapped(RuntimeError):
    """Raised in a grading worker when a trapped function is called (see :func:`install_traps`)."""


SIDE_EFFECTS = (
    "system",
    "popen",
    "fork",
    "forkpty",
    "posix_spawn",
    "posix_spawnp",
    *(f"exec{s}" for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")),
    *(f"spawn{s}" for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")),
)
SUSPICIOUS_NAMES = frozenset(
    {
        *SIDE_EFFECTS,
        "Popen",
        "run",
        "subprocess",
        "os",
        "sys",
        "builtins",
        "eval",
        "exec",
        "compile",
        "open",
        "getattr",
        "setattr",
        "delattr",
        "globals",
        "locals",
        "vars",
        "breakpoint",
        "input",
        "exit",
        "quit",
    }
)
TRUSTED_GENERATORS = ("dataclasses", "collections", "typing", "enum", "importlib", "functools", "string")

_report_path: str | None = None


def _trip(what: str, detail: object) -> None:
    """Record a trapped call in the report file, then refuse it."""
    line = f"{os.getpid()}\t{what}\t{repr(detail)[:300]}\n"
    if _report_path is not None:
        fd = os.open(_report_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8", "backslashreplace"))
        finally:
            os.close(fd)
    raise ExecutionTrapped(f"{what} called in a grading worker: {repr(detail)[:100]}")


def _suspicious_name(name: str) -> bool:
    return (name.startswith("__") and name.endswith("__")) or name in SUSPICIOUS_NAMES


def _suspicious_code(code: types.CodeType) -> bool:
    if any(_suspicious_name(n) for n in code.co_names):
        return True
    return any(isinstance(c, types.CodeType) and _suspicious_code(c) for c in code.co_consts)


def suspicious_source(source: object) -> bool:
    """True when ``source`` (text or a code object) holds code that input could have brought (see the module docstring)."""
    if isinstance(source, types.CodeType):
        return source.co_filename.startswith("<") and _suspicious_code(source)
    if isinstance(source, bytes | bytearray):
        source = bytes(source).decode("utf-8", "replace")
    if not isinstance(source, str):
        return False
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # would not run either
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Lambda | ast.Import):
            return True
        if isinstance(node, ast.ImportFrom) and node.module != "sympy":
            return True
        if isinstance(node, ast.Name) and _suspicious_name(node.id):
            return True
        if isinstance(node, ast.Attribute) and _suspicious_name(node.attr):
            return True
    return False


def _caller_namespaces(globals_: Any, locals_: Any) -> tuple[Any, Any, str]:
    """The namespaces eval/exec would use when called directly (the caller's), and the caller's module."""
    frame = sys._getframe(2)
    caller = frame.f_globals.get("__name__", "")
    if globals_ is None:
        globals_, locals_ = frame.f_globals, frame.f_locals if locals_ is None else locals_
    return globals_, locals_, caller


def _guarded(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(source: Any, globals_: Any = None, locals_: Any = None, /, **kwargs: Any) -> Any:
        globals_, locals_, caller = _caller_namespaces(globals_, locals_)
        if caller.split(".")[0] not in TRUSTED_GENERATORS and suspicious_source(source):
            _trip(f"builtins.{name}", source)
        return real(source, globals_, locals_, **kwargs)

    guarded.__name__ = guarded.__qualname__ = name
    return guarded


def _refusing(what: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        _trip(what, args)

    refuse.__name__ = refuse.__qualname__ = what.rsplit(".", 1)[-1]
    return refuse


def install_traps(report_path: str) -> None:
    """Worker initializer: trap process creation and code-like ``eval``/``exec`` in this process.

    Each trapped call appends ``pid<TAB>name<TAB>repr(argument)`` to ``report_path`` and raises
    :class:`ExecutionTrapped`. Idempotent enough for tests: installing twice only re-points the report.
    """
    global _report_path
    first = _report_path is None
    _report_path = report_path
    if not first:
        return
    for name in SIDE_EFFECTS:
        if hasattr(os, name):
            setattr(os, name, _refusing(f"os.{name}"))
    subprocess.Popen = _refusing("subprocess.Popen")  # type: ignore[misc, assignment]
    builtins.eval = _guarded("eval", builtins.eval)
    builtins.exec = _guarded("exec", builtins.exec)


def read_trap_report(report_path: str | os.PathLike[str]) -> list[str]:
    """The lines trapped calls wrote (none when the file does not exist)."""
    try:
        with open(report_path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []
