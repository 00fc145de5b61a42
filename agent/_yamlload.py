"""YAML into pydantic models, with every problem reported at the line of its key.

:func:`load_yaml_model` composes the YAML node tree itself to learn the line of every key and
list item, validates the document with an ``extra="forbid"`` model, then maps pydantic's
error locations back to lines (or to the nearest parent that is in the file). The cost is a
second walk over the document, negligible for hand-written files. Problems are
``(line, dotted.key, message)`` triples; :func:`format_problems` renders them as
``FILE:LINE: key.path: what is wrong (how to fix)``.

Files are hand-written configuration, so they are bounded before anything is built:
at most :data:`MAX_FILE_BYTES`, UTF-8 (:func:`read_text`), and at most
:data:`MAX_VALUES` values once aliases are expanded — a ten-line "billion laughs" file of
nested aliases would otherwise expand to billions of values in whatever walks it next.
:func:`safe_load` applies the same bounds to plain YAML data (simulator scripts).

>>> _dotted(("tools", "enabled", 0))
'tools.enabled[0]'
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ValidationError

from agent.errors import ConfigError

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_VALUES",
    "URL_PATTERN",
    "Loc",
    "NestedProblem",
    "Problem",
    "format_problems",
    "line_of",
    "load_yaml_model",
    "read_text",
    "safe_load",
    "validate_file",
]

MAX_FILE_BYTES = 4 * 1024 * 1024
"""Largest configuration file read (task files, suites, scripts)."""
MAX_VALUES = 200_000
"""Most scalars, lists and mappings a document may hold with its aliases expanded."""

URL_PATTERN = r"^https?://\S+$"
"""Fields with this pattern get "expected an http:// or https:// URL" instead of a regex."""

Loc = tuple[str | int, ...]
Problem = tuple[int, str, str]  # (line, dotted key, message)
M = typing.TypeVar("M", bound=BaseModel)


class NestedProblem(ValueError):
    """A validator's error that points inside the value: ``path`` continues the field's loc.

    ``raise NestedProblem("not a valid JSON Schema: ...", ("properties", "x"))``
    """

    def __init__(self, message: str, path: tuple[Any, ...]) -> None:
        super().__init__(message)
        self.path = path


def load_yaml_model(path: str | Path, model: type[M]) -> M:
    """Any ``extra="forbid"`` model from a YAML file, with errors that name key and line.

    For other file formats (eval suites): ``load_yaml_model("suite.yaml", Suite)``.
    """
    obj, _, problems = validate_file(Path(path), model)
    if problems or obj is None:
        raise ConfigError(format_problems(Path(path), problems))
    return obj


class _Unreadable(ConfigError):
    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.line, self.reason = line, reason


def read_text(path: Path, what: str = "file") -> str:
    """A configuration file's text: bounded in size, UTF-8, or a ConfigError saying why.

    ``read_text(Path("task.yaml"), "task file")``
    """
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _Unreadable(path, 1, f"cannot read the {what}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise _Unreadable(
            path,
            1,
            f"the {what} is larger than {MAX_FILE_BYTES // 2**20} MiB; is it the right file?",
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _Unreadable(
            path,
            line,
            f"the {what} is not UTF-8 text (byte "
            f"0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8",
        ) from None


def safe_load(text: str, source: str = "<yaml>") -> Any:
    """``yaml.safe_load`` with the alias bound; YAML errors become a ConfigError.

    >>> safe_load("[a, b]")
    ['a', 'b']
    """
    data, _, problems = _parse_yaml(text)
    if problems:
        raise ConfigError("; ".join(f"{source}:{line}: {msg}" for line, _, msg in problems))
    return data


def validate_file(path: Path, model: type[M]) -> tuple[M | None, dict[Loc, int], list[Problem]]:
    """The validated model (None on problems), the line of every key, and the problems.

    ``task, lines, problems = validate_file(Path("task.yaml"), Task)``
    """
    try:
        text = read_text(path)
    except _Unreadable as exc:
        return None, {}, [(exc.line, "", exc.reason)]
    data, lines, problems = _parse_yaml(text)
    if not problems and not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        problems.append((1, "", f"expected a mapping of keys, got {got}"))
    if problems:
        return None, lines, problems
    try:
        return model.model_validate(data), lines, problems
    except ValidationError as exc:
        return None, lines, _explain(exc, data, lines, model)


def line_of(lines: dict[Loc, int], loc: Loc) -> int:
    """Line of ``loc``, or of its nearest parent that appears in the file.

    >>> line_of({("a",): 3}, ("a", "b"))
    3
    """
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1


def format_problems(path: Path, problems: list[Problem], what: str = "task file") -> str:
    """A summary line, then one ``FILE:LINE: key: message`` line per problem, by line.

    ``format_problems(Path("t.yaml"), [(3, "input", "missing")])``; ``what`` names the
    kind of file in the summary (``"suite file"``).
    """
    rows = sorted(problems, key=lambda p: p[0])
    body = "\n".join(f"{path}:{line}: {key + ': ' if key else ''}{msg}" for line, key, msg in rows)
    n = len(rows)
    return f"{path}: {n} problem{'s' if n > 1 else ''} in {what}\n{body}"


def _parse_yaml(text: str) -> tuple[Any, dict[Loc, int], list[Problem]]:
    """The document, the line of every key and list item, and duplicate-key problems."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # checked up front: control characters
        line = text.count("\n", 0, exc.position) + 1
        return (
            None,
            {},
            [
                (
                    line,
                    "",
                    f"the file holds the control character U+{exc.character:04X}"
                    " (YAML allows tab, newline and printable text only); remove it",
                )
            ],
        )
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_VALUES:
            why = (
                f"the YAML expands to more than {MAX_VALUES:,} values through its aliases "
                "(*name); write the values out, or use fewer aliases"
            )
            return None, {}, [(1, "", why)]
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        return None, {}, [(line, "", f"YAML syntax error: {what} (check indentation and quotes)")]
    except yaml.YAMLError as exc:
        return None, {}, [(1, "", f"YAML error: {exc}")]
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    problems: list[Problem] = []
    if node is not None:
        _record_lines(node, (), lines, problems, set())
    return data, lines, problems


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values ``node`` holds with every alias expanded (linear: shared nodes are
    counted once per reference from a memo, never walked again)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once rather than looping
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, memo) for item in node.value)
    else:
        size = 1
    memo[id(node)] = min(size, MAX_VALUES + 1)  # saturate: a huge count is just "too many"
    return memo[id(node)]


def _record_lines(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list, seen: set[int]
) -> None:
    if id(node) in seen:  # an alias of a node already walked: its lines are known
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*loc, key_node.value)
            if key in lines:
                problems.append(
                    (
                        key_node.start_mark.line + 1,
                        _dotted(key),
                        f"duplicate key (first at line {lines[key]}; keep one)",
                    )
                )
                continue
            lines[key] = key_node.start_mark.line + 1
            _record_lines(value_node, key, lines, problems, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*loc, i)] = item.start_mark.line + 1
            _record_lines(item, (*loc, i), lines, problems, seen)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _data_loc(raw: Loc, data: Any, kind: str) -> tuple[Loc, int | None]:
    """Drop pydantic's union tags (``'list[str]'``, ``'literal[...]'``) from an error loc.

    Also returns how deep the first tag sat (None: no union on the way).
    """
    loc: list[str | int] = []
    tagged_at = None
    node = data
    for i, part in enumerate(raw):
        last = i == len(raw) - 1
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif last and kind in ("missing", "extra_forbidden") and isinstance(node, dict):
            pass
        else:
            tagged_at = len(loc) if tagged_at is None else tagged_at
            continue
        loc.append(part)
    return tuple(loc), tagged_at


def _explain(exc: ValidationError, data: Any, lines: dict[Loc, int], root: type) -> list:
    errors = []
    for err in exc.errors():
        loc, tagged_at = _data_loc(tuple(err["loc"]), data, err["type"])
        mismatch = err["type"].endswith("_type")
        errors.append((err, loc, None if tagged_at is None else loc[:tagged_at], mismatch))
    # In a union, "should be a string" is noise when the list branch says what is wrong.
    explained = {union for _, _, union, mismatch in errors if union is not None and not mismatch}
    by_loc: dict[Loc, list[str]] = {}
    for err, loc, union, mismatch in errors:
        if mismatch and union in explained:
            continue
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, NestedProblem):
            loc, msg = _deepest(lines, loc + ctx_error.path), str(ctx_error)
        else:
            msg = _message(err, loc, root)
        if msg not in by_loc.setdefault(loc, []):
            by_loc[loc].append(msg)
    return [(line_of(lines, loc), _dotted(loc), "; or ".join(msgs)) for loc, msgs in by_loc.items()]


def _deepest(lines: dict[Loc, int], loc: Loc) -> Loc:
    while len(loc) > 1 and loc not in lines:
        loc = loc[:-1]
    return loc


def _message(err: dict[str, Any], loc: Loc, root: type) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        allowed = sorted(_fields_at(root, loc[:-1]))
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "allowed: " + ", ".join(allowed)
        return f"unknown key '{key}' ({hint})"
    if kind == "missing":
        return f"required key is missing (add '{loc[-1] if loc else '?'}:')"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and err["ctx"]["pattern"] == URL_PATTERN:
        msg = "expected an http:// or https:// URL"
    if kind not in ("value_error", "assertion_error"):
        msg += f" (got {err['input']!r})"
    return msg


def _fields_at(model: type[BaseModel], loc: Loc) -> set[str]:
    """Field names of the model found by following ``loc`` from ``model``; empty if none."""
    tp: Any = model
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return set()
    models = [t for t in _flatten(tp) if isinstance(t, type) and issubclass(t, BaseModel)]
    return set(models[0].model_fields) if models else set()


def _step(tp: Any, part: str | int) -> Any:
    for t in _flatten(tp):
        if isinstance(t, type) and issubclass(t, BaseModel) and part in t.model_fields:
            return t.model_fields[part].annotation
        origin, args = typing.get_origin(t), typing.get_args(t)
        if origin is list and isinstance(part, int):
            return args[0]
        if origin is dict and isinstance(part, str):
            return args[1]
    return None


def _flatten(tp: Any) -> list[Any]:
    """The members of a (possibly ``Annotated``) union type, flattened; ``[tp]`` otherwise."""
    if typing.get_origin(tp) is Annotated:
        return _flatten(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [x for arg in typing.get_args(tp) for x in _flatten(arg)]
    return [tp]
