"""The guard of the read-only query path: one reading statement, no host, network or settings access.

The engine's own read-only mode is not enough: embedded chDB with ``readonly=1`` still writes ``INTO
OUTFILE`` files and runs the scalar ``file()`` function (it reads any file the process may read), and
a server's ``readonly=2`` allows table functions and ``SET``. So before a query reaches any engine,
:func:`check_readonly_sql` looks at its code the way ClickHouse's lexer splits it and refuses:

- anything but one ``SELECT`` / ``WITH`` / ``SHOW`` / ``DESCRIBE`` / ``EXISTS`` / ``EXPLAIN`` statement
  (so ``INSERT``, ``ALTER``, ``DELETE``, ``CREATE``, ``DROP``, ``TRUNCATE``, ``SYSTEM``, ``SET``,
  ``GRANT``, ``KILL`` … and a second statement after ``;``);
- ``INTO OUTFILE`` / ``FROM INFILE`` and a ``SETTINGS`` clause (format settings name files too);
- a call of any function in :data:`HOST_FUNCTIONS` (or :data:`HOST_FUNCTIONS_EXACT`) — the table
  functions that read or write files, URLs, object stores, other servers or processes (each family by
  its prefix, so ``fileCluster``, ``filesystem``, ``deltaLakeLocal``, ``icebergLocal``… are covered),
  and the scalar ``file()``.

The code is what remains once string literals, heredocs (``$tag$…$tag$``) and comments (``--``,
``# ``, ``#!``, nested ``/* */``) are removed and quoted identifiers (`` `x` ``, ``"x"``) are unquoted,
following ClickHouse's lexer: a function name hidden in quotes or behind a comment is still found, and
text that only looks like a quote inside a heredoc or comment cannot hide code. Unterminated strings or
comments are refused. ``tests/security/test_readonly_path.py`` checks every table function the
installed engine has against this list.
"""

from __future__ import annotations

import re

READING_STATEMENTS = ("select", "with", "show", "describe", "desc", "exists", "explain")
HOST_FUNCTIONS = (
    # files and the host: file, fileCluster, filesystem, filesystemAvailable…
    "file", "input", "executable", "python", "eval",
    # URLs and object stores
    "s3", "gcs", "oss", "cosn", "azureblobstorage", "hdfs", "arrow", "bigquery", "ytsaurus",
    # lakehouse readers (local, S3, Azure, HDFS variants)
    "iceberg", "deltalake", "hudi", "paimon",
    # other servers and databases
    "remote", "cluster", "mysql", "postgresql", "mongodb", "redis", "sqlite", "odbc", "jdbc", "prometheus",
    # indirection that could carry any of the above, and table internals
    "dictionary", "merge", "view", "loop", "fuzz",
)
"""Refused function-name prefixes (case-insensitive): ``prefix`` followed by word characters and ``(``."""
HOST_FUNCTIONS_EXACT = ("url", "urlcluster")
"""Refused function names matched whole (``URLHash`` and the other URL-parsing functions stay allowed)."""

_CALL = re.compile(r"\b(?:(?:" + "|".join(HOST_FUNCTIONS) + r")\w*|" + "|".join(HOST_FUNCTIONS_EXACT) + r")\s*\(",
                   re.I)
_CLAUSES = re.compile(r"\binto\s+outfile\b|\bfrom\s+infile\b|\bsettings\b", re.I)
_HEREDOC = re.compile(r"\$(\w*)\$")
_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z]+)")


class RefusedSql(ValueError):
    """The SQL may not run on the read-only query path; the message says why."""


def _quoted_end(sql: str, start: int, quote: str) -> int:
    """Index after the closing ``quote`` of a literal or identifier opened at ``start`` (``\\`` and doubling)."""
    i = start + 1
    while i < len(sql):
        char = sql[i]
        if char == "\\":
            i += 2
            continue
        if char == quote:
            if sql.startswith(quote, i + 1):
                i += 2
                continue
            return i + 1
        i += 1
    raise RefusedSql("refused: unterminated quoted text")


def _comment_end(sql: str, start: int) -> int:
    """Index after a (nested) ``/* */`` comment opened at ``start``."""
    depth, i = 0, start
    while i < len(sql):
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise RefusedSql("refused: unterminated comment")


def code_of(sql: str) -> str:
    """``sql`` without literals, heredocs and comments, quoted identifiers unquoted (ClickHouse's lexing)."""
    out: list[str] = []
    i = 0
    while i < len(sql):
        char = sql[i]
        if char == "'":
            i = _quoted_end(sql, i, "'")
            out.append(" '' ")
        elif char in "`\"":
            end = _quoted_end(sql, i, char)
            out.append(sql[i + 1:end - 1].replace(char * 2, char))
            i = end
        elif sql.startswith("--", i) or sql.startswith("# ", i) or sql.startswith("#!", i):
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end
            out.append(" ")
        elif sql.startswith("/*", i):
            i = _comment_end(sql, i)
            out.append(" ")
        elif char == "$" and (tag := _HEREDOC.match(sql, i)) is not None:
            end = sql.find(tag.group(0), tag.end())
            if end < 0:
                raise RefusedSql("refused: unterminated heredoc")
            i = end + len(tag.group(0))
            out.append(" '' ")
        else:
            out.append(char)
            i += 1
    return "".join(out)


def check_readonly_sql(sql: str) -> None:
    """Refuse SQL that could write, read the host or the network, change settings, or run twice (RefusedSql)."""
    code = code_of(sql)
    statements = [part for part in code.split(";") if part.strip()]
    if len(statements) > 1:
        raise RefusedSql("refused: one statement per query")
    first = _FIRST_WORD.match(statements[0]) if statements else None
    if first is None or first.group(1).lower() not in READING_STATEMENTS:
        word = first.group(1) if first else "nothing"
        raise RefusedSql(f"refused: '{word}' is not a reading statement (only "
                         f"{', '.join(s.upper() for s in READING_STATEMENTS)} on the read-only query path)")
    found = _CLAUSES.search(code) or _CALL.search(code)
    if found:
        raise RefusedSql(f"refused: '{' '.join(found.group(0).split())}' is not allowed on the read-only query "
                         "path (no files, URLs, remote tables, settings or SYSTEM statements)")
