"""The statement wall of the SQL tool: which one statement a call may run.

``duckdb.extract_statements`` must find exactly one statement, and its type must be allowed:
SELECT-like (SELECT, WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN of those) when the
policy is read-only; DML, DDL and COPY too otherwise. Always refused: ATTACH, DETACH, INSTALL,
LOAD, SET/RESET/USE, PRAGMA, CALL, EXPORT/IMPORT, CREATE/DROP SECRET, and transactions.
``EXPLAIN ANALYZE`` runs its statement, so the inner one is checked.

Two rules keep a call's effects to what the task file says, the same in both sandbox modes:

- **One call, one transaction.** Every call runs on a cursor of its own that is closed
  afterwards (`tools.sql`), so a transaction cannot span calls: BEGIN/COMMIT/ROLLBACK and
  TEMP objects (which would vanish with the cursor) are refused with a message saying so.
- **Files are written only where file writes are allowed.** ``COPY … TO`` writes a file, so
  it needs ``tools.files.allow_write`` as well as SQL writes; ``COPY table FROM 'file'``
  only reads. A COPY not recognised as ``FROM`` counts as a write (refused when in doubt).

>>> check_statement("SELECT 1", read_only=True).type.name
'SELECT'
"""

from __future__ import annotations

import functools
import re

import duckdb

from agent.errors import ToolArgumentError, ToolError, ToolExecutionError, ToolPolicyError

__all__ = ["check_statement", "first_lines", "writes"]

_T = duckdb.StatementType
_READ_TYPES = frozenset({_T.SELECT})
_WRITE_TYPES = _READ_TYPES | {
    _T.INSERT, _T.UPDATE, _T.DELETE, _T.MERGE_INTO, _T.CREATE, _T.DROP, _T.ALTER,
    _T.MULTI, _T.COPY,
}  # fmt: skip
_HINTS = {
    _T.SET: "settings (SET/RESET/USE) are fixed by the tool's policy",
    _T.PRAGMA: "use DESCRIBE t or SELECT * FROM pragma_table_info('t')",
    _T.CALL: "call table functions as SELECT * FROM fn()",
    _T.ATTACH: "only the configured database is available; query files by relative path",
    _T.DETACH: "only the configured database is available",
    _T.LOAD: "extensions cannot be installed or loaded",
    _T.EXPORT: "exporting the database is not allowed",
}
_OWN_TRANSACTION = (
    "each sql_query call runs in its own transaction (committed when it succeeds, rolled "
    "back when it fails), so transactions cannot span calls"
)
_SECRET = re.compile(
    r"^\s*(CREATE|DROP)\s+(OR\s+REPLACE\s+)?((PERSISTENT|TEMPORARY|TEMP)\s+)?SECRET\b", re.I
)
_TEMP = re.compile(r"^\s*CREATE\s+(OR\s+REPLACE\s+)?(TEMP|TEMPORARY)\b", re.I)
_IDENT = r'(?:"(?:[^"]|"")*"|\w+)'
_COPY_FROM = re.compile(
    rf"^\s*COPY\s+{_IDENT}(?:\s*\.\s*{_IDENT}){{0,2}}\s*(?:\([^()]*\)\s*)?FROM\b", re.I
)
# EXPLAIN's own words: keywords, or an option list without quotes or comments, so the rest
# of the original text is the inner statement exactly as DuckDB tokenises it.
_GAP = r"(?:\s|--[^\n]*|/\*.*?\*/)"
_EXPLAIN = re.compile(rf"EXPLAIN{_GAP}+(?:ANALYZE{_GAP}+|\([\w\s,]*\){_GAP}*)?", re.I | re.S)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_LEADING = re.compile(rf"{_GAP}*", re.S)


def check_statement(query: str, *, read_only: bool, file_writes: bool = True) -> duckdb.Statement:
    """The single statement of ``query`` if its type is allowed, else a ``ToolError``.

    ``file_writes``: whether ``COPY … TO`` may write a file (``tools.files.allow_write``).

    >>> check_statement("COPY t FROM 'a.csv'", read_only=False, file_writes=False).type.name
    'COPY'
    """
    try:
        statements = duckdb.extract_statements(query)
        kinds = [statement.type for statement in statements]
    except duckdb.Error as exc:
        raise ToolExecutionError(f"SQL syntax error: {first_lines(str(exc))}") from None
    except ValueError:  # the binding has no enum member for some types (UPDATE EXTENSIONS)
        raise ToolPolicyError("statement type not allowed: unknown to the tool") from None
    except TypeError:  # a lone surrogate: the binding cannot pass the text to DuckDB
        raise ToolArgumentError("the query is not valid Unicode (lone surrogate)") from None
    if not statements:
        raise ToolArgumentError("empty query: send one SQL statement")
    if len(statements) > 1:
        raise ToolPolicyError(
            f"one statement per call, got {len(statements)}; send them as separate calls"
        )
    statement = statements[0]
    _check_type(kinds[0], statement.query, read_only, file_writes)
    return statement


@functools.lru_cache(maxsize=1024)
def writes(query: str) -> bool:
    """Whether ``query`` may change data: anything a read-only engine would refuse.

    Remembered per text: a call is judged when it is planned and again before it runs.

    Judged by DuckDB's parse, not the first word: ``WITH x AS (…) INSERT …`` and
    ``EXPLAIN ANALYZE DELETE …`` write although they start like reads.

    >>> writes("SELECT 1"), writes("WITH x AS (SELECT 1) DELETE FROM t")
    (False, True)
    """
    try:
        check_statement(query, read_only=True)
    except ToolError:
        return True
    return False


def _check_type(kind: duckdb.StatementType, text: str, read_only: bool, files: bool) -> None:
    if kind == _T.EXPLAIN:
        head = text[_LEADING.match(text).end() :]  # type: ignore[union-attr]
        prefix = _EXPLAIN.match(head)
        try:
            if prefix:  # ANALYZE runs it
                check_statement(head[prefix.end() :], read_only=read_only, file_writes=files)
                return
        except (ToolExecutionError, ToolArgumentError):
            pass  # the rest did not parse alone: refuse rather than guess
        raise ToolPolicyError(
            "statement type not allowed: EXPLAIN in this form; use EXPLAIN SELECT …"
        )
    # Comments only blank out words here; a string cannot come before SECRET in CREATE/DROP,
    # TEMP in CREATE, or FROM in COPY.
    bare = _COMMENTS.sub(" ", text)
    allowed = _READ_TYPES if read_only else _WRITE_TYPES
    if _SECRET.match(bare):
        raise ToolPolicyError("statement type not allowed: secrets cannot be created or dropped")
    if kind == _T.TRANSACTION:
        raise ToolPolicyError(
            f"statement type not allowed: TRANSACTION; {_OWN_TRANSACTION}. Send each SELECT "
            "or change as one statement"
        )
    if kind not in allowed:
        what = (
            "SELECT-like statements only (SELECT, WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)"
            if read_only
            else "SELECT, DML, DDL and COPY within the workspace"
        )
        hint = _HINTS.get(kind, "this tool is read-only" if read_only else "")
        raise ToolPolicyError(
            f"statement type not allowed: {kind.name}; allowed: {what}"
            + (f"; {hint}" if hint else "")
        )
    if kind == _T.CREATE and _TEMP.match(bare):
        raise ToolPolicyError(
            f"TEMP objects are not allowed: {_OWN_TRANSACTION}, and a TEMP object would "
            "vanish with its call. Create a regular table or view instead"
        )
    if kind == _T.COPY and not files and not _COPY_FROM.match(bare):
        raise ToolPolicyError(
            "COPY … TO writes a file, and this task does not allow file writes "
            "(tools.files.allow_write); SQL writes reach the database only. Query the data "
            "instead, or COPY a table FROM a file"
        )


def first_lines(text: str, n: int = 8) -> str:
    """DuckDB messages carry a caret diagram; keep it but not pages of hints."""
    return "\n".join(text.strip().splitlines()[:n])[:1500]
