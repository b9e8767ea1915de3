#!/usr/bin/env python3
"""Run Veil's ClickHouse migrations on a current ClickHouse engine (chdb-core).

The tests run the DDL on the ClickHouse that Debian ships (18.16); this check
runs the same files on a current release, in-process, without a server:

1. CREATE DATABASE IF NOT EXISTS veil, then USE veil (as `veil migrate` does
   by connecting with database `veil`);
2. every statement of schemas/clickhouse/*.sql, files sorted by name,
   statements in file order;
3. all of them a second time (the migrations must be idempotent);
4. SELECT name, engine FROM system.tables WHERE database = 'veil', printed.

It exits non-zero, naming the file, the statement and the engine's error, as
soon as one statement fails.

File format: plain SQL; statements end with ';' (normally at the end of a
line); '--' and '/* */' comments are allowed. A line '-- +statement' also ends
a statement. goose-style files work too: only the '-- +goose Up' section
runs, and '-- +goose StatementBegin/StatementEnd' blocks are kept whole.

Usage: clickhouse_current.py [--schemas DIR] [--passes N]
Run it through deploy/ci/clickhouse_current.sh, which provides chdb-core.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

DATABASE = "veil"
ROOT = Path(__file__).resolve().parents[2]


class Statement:
    def __init__(self, path: Path, line: int, sql: str):
        self.path = path
        self.line = line
        self.sql = sql

    def where(self) -> str:
        try:
            shown = self.path.relative_to(Path.cwd())
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}"


def split_sql(text: str, first_line: int = 1):
    """Split SQL text on ';' outside quotes and comments.

    Yields (line, sql) with comments removed and whitespace trimmed; empty
    statements are dropped. A trailing statement without ';' is kept.
    """
    out: list[str] = []
    start_line = None
    line = first_line
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            out.append(c)
            i += 1
            continue
        if c == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j  # keep the newline itself
            continue
        if c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            end = n if j < 0 else j + 2
            line += text.count("\n", i, end)
            out.append(" ")
            i = end
            continue
        if c in "'\"`":
            if start_line is None:
                start_line = line
            j = i + 1
            while j < n:
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == c:
                    if j + 1 < n and text[j + 1] == c:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            end = min(j + 1, n)
            line += text.count("\n", i, end)
            out.append(text[i:end])
            i = end
            continue
        if c == ";":
            sql = "".join(out).strip()
            if sql:
                yield start_line or line, sql
            out, start_line = [], None
            i += 1
            continue
        if start_line is None and not c.isspace():
            start_line = line
        out.append(c)
        i += 1
    sql = "".join(out).strip()
    if sql:
        yield start_line or line, sql


def parse_file(path: Path) -> list[Statement]:
    """Statements of one migration file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    is_goose = any(l.strip().lower().startswith("-- +goose up") for l in lines)

    statements: list[Statement] = []
    chunk: list[str] = []
    chunk_line = 1
    section = None if is_goose else "up"
    in_block = False

    def flush(next_line: int, whole: bool = False):
        nonlocal chunk, chunk_line
        text = "".join(chunk)
        if section == "up" and text.strip():
            if whole:
                parts = list(split_sql(text, chunk_line))
                # a StatementBegin block is one statement, ';' and all
                sql = text.strip().rstrip(";").strip()
                if parts:
                    statements.append(Statement(path, parts[0][0], sql))
            else:
                for line_no, sql in split_sql(text, chunk_line):
                    statements.append(Statement(path, line_no, sql))
        chunk = []
        chunk_line = next_line

    for idx, raw in enumerate(lines, start=1):
        marker = raw.strip().lower()
        if marker.startswith("-- +"):
            word = marker[4:].split()
            if word[:1] == ["statement"]:
                flush(idx + 1)
                continue
            if word[:1] == ["goose"] and len(word) >= 2:
                kind = word[1]
                if kind == "up":
                    flush(idx + 1)
                    section = "up"
                elif kind == "down":
                    flush(idx + 1)
                    section = "down"
                elif kind == "statementbegin":
                    flush(idx + 1)
                    in_block = True
                elif kind == "statementend":
                    flush(idx + 1, whole=True)
                    in_block = False
                else:  # NO TRANSACTION, ENVSUB ON/OFF: nothing to do here
                    chunk.append("\n")
                continue
        chunk.append(raw)
    if in_block:
        raise SystemExit(f"{path}: '-- +goose StatementBegin' without StatementEnd")
    flush(len(lines) + 1)
    return statements


def load(schemas: Path) -> list[Statement]:
    files = sorted(p for p in schemas.glob("*.sql") if p.is_file())
    if not files:
        raise SystemExit(f"clickhouse_current: no *.sql files in {schemas}")
    statements: list[Statement] = []
    for f in files:
        got = parse_file(f)
        print(f"clickhouse_current: {f.name}: {len(got)} statement(s)")
        statements.extend(got)
    return statements


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--schemas",
        type=Path,
        default=ROOT / "schemas" / "clickhouse",
        help="directory of ClickHouse migrations (default: %(default)s)",
    )
    ap.add_argument(
        "--passes",
        type=int,
        default=2,
        help="how many times to run every statement (default: %(default)s, for idempotency)",
    )
    args = ap.parse_args(argv)

    try:
        import chdb
        from chdb import session as chs
    except ImportError as e:
        print(
            f"clickhouse_current: chdb-core is not installed ({e}); "
            "run deploy/ci/clickhouse_current.sh",
            file=sys.stderr,
        )
        return 2

    statements = load(args.schemas.resolve())

    with tempfile.TemporaryDirectory(prefix="veil-chdb-") as tmp:
        sess = chs.Session(os.path.join(tmp, "db"))
        try:
            version = sess.query("SELECT version()", "TSV").data().strip()
            print(
                f"clickhouse_current: ClickHouse {version} (chdb-core {chdb.__version__}), "
                f"{len(statements)} statement(s) x {args.passes} pass(es)"
            )
            setup = [
                f"CREATE DATABASE IF NOT EXISTS {DATABASE}",
                f"USE {DATABASE}",
            ]
            for sql in setup:
                sess.query(sql, "TSV")

            for n in range(1, args.passes + 1):
                for st in statements:
                    try:
                        sess.query(st.sql, "TSV")
                    except Exception as e:  # chdb raises ChdbError (RuntimeError)
                        print(
                            f"clickhouse_current: FAIL pass {n}, {st.where()}:\n"
                            f"{st.sql}\n-- error: {e}",
                            file=sys.stderr,
                        )
                        return 1
                print(f"clickhouse_current: pass {n}: {len(statements)} statement(s) ok")

            tables = sess.query(
                "SELECT name, engine FROM system.tables "
                f"WHERE database = '{DATABASE}' ORDER BY name",
                "PrettyCompactNoEscapes",
            ).data()
            print(tables, end="" if tables.endswith("\n") else "\n")
        finally:
            sess.close()
    print("clickhouse_current: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
