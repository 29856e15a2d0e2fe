"""One posture check: its YAML file format, validation with file:line errors, and compilation.

A check file is a YAML mapping::

    id: disk-encryption
    title: Disk encryption is on
    description: The system volume is encrypted at rest.
    platforms: [linux, macos, windows]
    severity: high                      # info | low | medium | high | critical
    expression: disk_encryption.system_volume_encrypted
    enforcement:                        # or just: block
      mode: warn_then_block             # report_only | notify | warn_then_block | block
      deadline_days: 7                  # only (and always) for warn_then_block
    max_fact_age: 1d                    # 90s, 30m, 6h, 7d, 1d12h
    variables: {}                       # optional defaults, visible as vars.NAME
    fail_closed: false                  # optional: treat UNKNOWN/ERROR like FAIL
    remediation:                        # or one string for every platform
      default: Turn on disk encryption.
      macos: Turn on FileVault ({{ os.name }} {{ os.version }}).

:func:`parse_check` never raises anything but :class:`CheckValidationError`,
whose issues each carry the file and line they are about (from YAML node
marks). The expression is compiled once here; the program is kept on the
:class:`Check`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cel
import yaml

from trust_protocol.facts_schema import PLATFORMS, ROOTS, known_path

SEVERITIES = ("info", "low", "medium", "high", "critical")
MODES = ("report_only", "notify", "warn_then_block", "block")
REQUIRED = (
    "id",
    "title",
    "description",
    "platforms",
    "expression",
    "severity",
    "enforcement",
    "remediation",
    "max_fact_age",
)
OPTIONAL = ("variables", "fail_closed")
MAX_FILE_BYTES = 256 * 1024
MAX_EXPRESSION = 4000
MAX_FACT_AGE = dt.timedelta(days=90)
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_AGE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_STRING_LITERAL = re.compile(r"""[rR]?("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")
_PATH = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)(\s*\()?")
_CEL_WORDS = frozenset(
    "in true false null int uint double bool string bytes list map null_type type dyn "
    "as break const continue else for function if import let loop package namespace "
    "return var void while".split()
)
_MACRO_VAR = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


@dataclass(frozen=True)
class CheckIssue:
    """A problem in a check file, at a line (1-based)."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


class CheckValidationError(Exception):
    """A check file is not valid; ``issues`` says where and why."""

    def __init__(self, issues: list[CheckIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass(frozen=True)
class Enforcement:
    """What a failing check does: its mode, and the deadline for warn_then_block."""

    mode: str
    deadline_days: int | None = None


@dataclass(frozen=True)
class Check:
    """A validated, compiled posture check."""

    id: str
    title: str
    description: str
    platforms: tuple[str, ...]
    expression: str
    severity: str
    enforcement: Enforcement
    remediation: Mapping[str, str]
    max_fact_age: dt.timedelta
    variables: Mapping[str, Any] = field(default_factory=dict)
    fail_closed: bool = False
    source: str = "<string>"
    line: int = 1
    expression_line: int = 1
    paths: tuple[str, ...] = ()
    roots: tuple[str, ...] = ()
    program: Any = field(default=None, compare=False, repr=False)

    def remediation_for(self, platform: str | None) -> str:
        """The remediation Markdown for ``platform`` (or the default)."""
        if platform and platform in self.remediation:
            return self.remediation[platform]
        return self.remediation.get("default", "")


def parse_duration(value: Any) -> dt.timedelta:
    """``90`` (seconds), ``"30m"``, ``"6h"``, ``"7d"`` or ``"1d12h"`` as a timedelta."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30m, 6h or 7d")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and value.strip() and (match := _AGE.match(value.strip())):
        d, h, m, s = (int(x or 0) for x in match.groups())
        seconds = ((d * 24 + h) * 60 + m) * 60 + s
    else:
        raise ValueError("must be a duration such as 30m, 6h or 7d")
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    if seconds > MAX_FACT_AGE.total_seconds():
        raise ValueError("must be at most 90d")
    return dt.timedelta(seconds=seconds)


def expression_paths(expression: str) -> tuple[list[str], set[str]]:
    """Dotted identifiers in an expression (outside string literals), and macro variables.

    ``os.version.startsWith("14")`` yields ``os.version`` (the method is dropped).
    """
    stripped = _STRING_LITERAL.sub('""', expression)
    macro_vars = set(_MACRO_VAR.findall(stripped))
    paths: list[str] = []
    for match in _PATH.finditer(stripped):
        parts = [p.strip() for p in match.group(1).split(".")]
        if parts[0] in _CEL_WORDS:
            continue
        if match.group(2):  # a call: the last segment is a function or method
            parts = parts[:-1]
        if parts:
            path = ".".join(parts)
            if path not in paths:
                paths.append(path)
    return paths, macro_vars


def placeholders(text: str) -> list[str]:
    """The ``{{ path }}`` placeholders in remediation text."""
    return _PLACEHOLDER.findall(text)


# --- YAML with marks -------------------------------------------------------------------


def _line(node: Any) -> int:
    return node.start_mark.line + 1 if node is not None else 1


def _key_nodes(node: Any) -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                out.setdefault(str(key.value), (key, value))
    return out


def _compose(text: str, source: str) -> tuple[Any, Any]:
    """(python data, root node) or raise CheckValidationError with the YAML error's line."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # the reader rejects control characters right here
        node = loader.get_single_node()
        if node is None:
            raise CheckValidationError([CheckIssue(source, 1, "the file is empty")])
        return loader.construct_document(node), node
    except yaml.MarkedYAMLError as exc:
        # "while parsing a flow sequence" (context) points where the construct began,
        # which is where the author has to look; the problem mark may be end of file.
        mark = exc.context_mark or exc.problem_mark
        line = mark.line + 1 if mark else 1
        problem = "; ".join(filter(None, [exc.context, exc.problem])) or "invalid YAML"
        raise CheckValidationError([CheckIssue(source, line, f"YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise CheckValidationError([CheckIssue(source, 1, f"YAML: {exc}"[:300])]) from None
    except RecursionError:
        raise CheckValidationError([CheckIssue(source, 1, "YAML nested too deeply")]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _expression_line(node: Any, expression: str, cel_error: str) -> int:
    """File line of a CEL syntax error: the value's line plus the error's line inside it."""
    base = _line(node)
    if getattr(node, "style", None) in ("|", ">"):
        base += 1  # block scalars start on the line after the indicator
    match = re.search(r"<input>:(\d+):", cel_error)
    inner = int(match.group(1)) - 1 if match else 0
    last = expression.rstrip().count("\n")  # an error "at end of input" is on the last line
    return base + min(inner, last)


def _line_in_expression(node: Any, expression: str, needle: str) -> int:
    """File line where ``needle`` first appears inside a (possibly block) expression."""
    base = _line(node) + (1 if getattr(node, "style", None) in ("|", ">") else 0)
    index = expression.find(needle)
    return base + (expression.count("\n", 0, index) if index >= 0 else 0)


def _json_like(value: Any, depth: int = 0) -> bool:
    if depth > 8:
        return False
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, list):
        return all(_json_like(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_like(v, depth + 1) for k, v in value.items())
    return False


def parse_check(text: str | bytes, source: str = "<string>") -> Check:
    """Validate and compile one check file's text; raise CheckValidationError with file:line."""
    if isinstance(text, bytes):
        if len(text) > MAX_FILE_BYTES:
            raise CheckValidationError([CheckIssue(source, 1, "file larger than 256 KiB")])
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckValidationError(
                [CheckIssue(source, 1, f"not UTF-8 (byte {exc.start})")]
            ) from None
    if len(text) > MAX_FILE_BYTES:
        raise CheckValidationError([CheckIssue(source, 1, "file larger than 256 KiB")])
    data, root = _compose(text, source)
    if not isinstance(data, dict):
        raise CheckValidationError([CheckIssue(source, _line(root), "a check must be a mapping")])
    return _Validator(data, root, source).run()


def load_check_file(path: Path | str) -> Check:
    """Read and parse one check file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckValidationError(
            [CheckIssue(str(path), 1, f"cannot read: {exc.strerror}")]
        ) from None
    return parse_check(raw, str(path))


class _Validator:
    def __init__(self, data: dict[Any, Any], root: Any, source: str) -> None:
        self.data = data
        self.nodes = _key_nodes(root)
        self.root = root
        self.source = source
        self.issues: list[CheckIssue] = []

    def issue(self, node: Any, message: str) -> None:
        self.issues.append(CheckIssue(self.source, _line(node), message))

    def value_node(self, key: str) -> Any:
        return self.nodes.get(key, (None, self.root))[1]

    def string(self, key: str, *, limit: int = 2000, pattern: re.Pattern[str] | None = None) -> str:
        value = self.data.get(key)
        if not isinstance(value, str) or not value.strip():
            self.issue(self.value_node(key), f"{key} must be a non-empty string")
            return ""
        if len(value) > limit:
            self.issue(self.value_node(key), f"{key} is longer than {limit} characters")
        if pattern and not pattern.match(value):
            self.issue(self.value_node(key), f"{key} {value[:40]!r} must match {pattern.pattern}")
        return value

    def run(self) -> Check:
        for key in self.data:
            if not isinstance(key, str) or key not in (*REQUIRED, *OPTIONAL):
                node = self.nodes.get(str(key), (self.root, None))[0]
                known = ", ".join((*REQUIRED, *OPTIONAL))
                self.issue(node, f"unknown field {str(key)[:40]!r} (fields: {known})")
        for key in REQUIRED:
            if key not in self.data:
                self.issue(self.root, f"missing required field {key!r}")
        if self.issues and any("missing" in i.message for i in self.issues):
            raise CheckValidationError(self.issues)

        check_id = self.string("id", limit=64, pattern=_ID)
        title = self.string("title", limit=200)
        description = self.string("description", limit=4000)
        platforms = self.platforms()
        severity = self.data.get("severity")
        if severity not in SEVERITIES:
            self.issue(
                self.value_node("severity"), f"severity must be one of {', '.join(SEVERITIES)}"
            )
        enforcement = self.enforcement()
        try:
            max_age = parse_duration(self.data.get("max_fact_age"))
        except ValueError as exc:
            self.issue(self.value_node("max_fact_age"), f"max_fact_age {exc}")
            max_age = dt.timedelta(hours=1)
        variables = self.variables()
        fail_closed = self.data.get("fail_closed", False)
        if not isinstance(fail_closed, bool):
            self.issue(self.value_node("fail_closed"), "fail_closed must be true or false")
            fail_closed = False
        expression, program, paths, roots = self.expression(variables)
        remediation = self.remediation(platforms, variables)
        if self.issues:
            raise CheckValidationError(self.issues)
        return Check(
            id=check_id,
            title=title,
            description=description,
            platforms=platforms,
            expression=expression,
            severity=str(severity),
            enforcement=enforcement,
            remediation=remediation,
            max_fact_age=max_age,
            variables=variables,
            fail_closed=fail_closed,
            source=self.source,
            line=_line(self.value_node("id")),
            expression_line=_line(self.value_node("expression")),
            paths=paths,
            roots=roots,
            program=program,
        )

    def platforms(self) -> tuple[str, ...]:
        value = self.data.get("platforms")
        node = self.value_node("platforms")
        if not isinstance(value, list) or not value:
            self.issue(node, f"platforms must be a non-empty list of {', '.join(PLATFORMS)}")
            return ()
        out: list[str] = []
        for index, item in enumerate(value):
            item_node = node.value[index] if isinstance(node, yaml.SequenceNode) else node
            if item not in PLATFORMS:
                self.issue(
                    item_node, f"unknown platform {str(item)[:20]!r} (use {', '.join(PLATFORMS)})"
                )
            elif item in out:
                self.issue(item_node, f"platform {item!r} listed twice")
            else:
                out.append(item)
        return tuple(out)

    def enforcement(self) -> Enforcement:
        value = self.data.get("enforcement")
        node = self.value_node("enforcement")
        if isinstance(value, str):
            value = {"mode": value}
            sub = {"mode": (node, node)}
        elif isinstance(value, dict):
            sub = _key_nodes(node)
        else:
            self.issue(
                node, "enforcement must be a mode or a mapping with mode (and deadline_days)"
            )
            return Enforcement("report_only")
        for key in value:
            if key not in ("mode", "deadline_days"):
                self.issue(
                    sub.get(str(key), (node,))[0], f"unknown enforcement field {str(key)[:40]!r}"
                )
        mode = value.get("mode")
        mode_node = sub.get("mode", (node, node))[1]
        if mode not in MODES:
            self.issue(mode_node, f"enforcement mode must be one of {', '.join(MODES)}")
            return Enforcement("report_only")
        deadline = value.get("deadline_days")
        deadline_node = sub.get("deadline_days", (node, node))[1]
        if mode == "warn_then_block":
            if (
                isinstance(deadline, bool)
                or not isinstance(deadline, int)
                or not 1 <= deadline <= 365
            ):
                self.issue(deadline_node, "warn_then_block needs deadline_days between 1 and 365")
                return Enforcement(mode, 1)
            return Enforcement(mode, deadline)
        if deadline is not None:
            self.issue(deadline_node, f"deadline_days only applies to warn_then_block, not {mode}")
        return Enforcement(mode)

    def variables(self) -> dict[str, Any]:
        value = self.data.get("variables", {})
        node = self.value_node("variables")
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.issue(node, "variables must be a mapping of name to value")
            return {}
        subs = _key_nodes(node)
        for name, item in value.items():
            key_node = subs.get(str(name), (node, node))[0]
            if not isinstance(name, str) or not _IDENT.match(name):
                self.issue(key_node, f"variable name {str(name)[:40]!r} must be an identifier")
            elif not _json_like(item):
                self.issue(key_node, f"variable {name!r} must be plain data (no dates or tags)")
        return dict(value)

    def expression(
        self, variables: Mapping[str, Any]
    ) -> tuple[str, Any, tuple[str, ...], tuple[str, ...]]:
        expression = self.string("expression", limit=MAX_EXPRESSION)
        node = self.value_node("expression")
        if not expression:
            return "", None, (), ()
        try:
            program = cel.compile(expression)
        except Exception as exc:  # the CEL parser reports ValueError; be safe
            found = re.search(r"<input>:\d+:(\d+): ([^\n]*)", str(exc))
            detail = f"column {found.group(1)}: {found.group(2)}" if found else str(exc)
            self.issues.append(
                CheckIssue(
                    self.source,
                    _expression_line(node, expression, str(exc)),
                    f"expression does not compile: {detail[:200]}",
                )
            )
            return expression, None, (), ()
        paths, macro_vars = expression_paths(expression)
        used: list[str] = []

        def at(needle: str, message: str) -> None:
            line = _line_in_expression(node, expression, needle)
            self.issues.append(CheckIssue(self.source, line, message))

        for path in paths:
            root, _, rest = path.partition(".")
            if root in macro_vars:
                continue
            if root == "vars":
                name = rest.split(".")[0]
                if not name:
                    at(path, "use vars.NAME, not vars alone")
                elif name not in variables:
                    at(path, f"vars.{name} is not declared under variables")
                continue
            if root not in ROOTS:
                at(path, f"unknown fact {root!r} (facts: see docs/facts.md)")
            elif not known_path(path):
                at(path, f"unknown fact {path!r} (see docs/facts.md)")
            else:
                used.append(path)
        try:
            names = program.variables()
        except Exception:
            names = []
        for name in names:
            if name not in ROOTS and name != "vars" and name not in macro_vars:
                if not any(p.split(".")[0] == name for p in paths):
                    at(name, f"unknown identifier {name!r}")
        # The fact sections to convert for this check (all of them if analysis failed).
        roots = tuple(sorted({n for n in names if n in ROOTS})) if names else ROOTS
        return expression, program, tuple(used), roots

    def remediation(
        self, platforms: tuple[str, ...], variables: Mapping[str, Any]
    ) -> dict[str, str]:
        value = self.data.get("remediation")
        node = self.value_node("remediation")
        if isinstance(value, str):
            texts = {"default": value}
            subs: dict[str, tuple[Any, Any]] = {"default": (node, node)}
        elif isinstance(value, dict):
            texts = value
            subs = _key_nodes(node)
        else:
            self.issue(node, "remediation must be Markdown text or a mapping of platform to text")
            return {}
        out: dict[str, str] = {}
        for key, text in texts.items():
            key_node, text_node = subs.get(str(key), (node, node))
            if key != "default" and key not in PLATFORMS:
                self.issue(
                    key_node, f"remediation key {str(key)[:20]!r} must be default or a platform"
                )
                continue
            if not isinstance(text, str) or not text.strip():
                self.issue(text_node, f"remediation for {key} must be non-empty Markdown")
                continue
            for placeholder in placeholders(text):
                root, _, rest = placeholder.partition(".")
                if root == "vars" and rest.split(".")[0] in variables:
                    continue
                if not placeholder or not known_path(placeholder):
                    self.issue(text_node, f"unknown placeholder {{{{ {placeholder[:60]} }}}}")
            out[str(key)] = text
        missing = [p for p in platforms if p not in out and "default" not in out]
        if missing:
            self.issue(node, f"remediation has no text for {', '.join(missing)} (add default)")
        return out
