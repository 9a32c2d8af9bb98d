"""``switchboard cost --by session|token|user|model|day``: a ledger's spend grouped one way, as a
table, JSON or CSV (docs/protocol.md "Access tokens and budgets", README).

Read-only, as ``switchboard cost``: an SQLite file is opened read-only (also while a gateway
writes it), a PostgreSQL ledger in one read-only transaction. Every usage row counts
(provisional ones too, as in a session's totals). ``token``: the name of the ledger access
token that owns the session (a session's owner digest is the token's SHA-256, the
``limits`` table's ``token_hash``; revoked tokens keep theirs for this), else the first 12
characters of the owner digest (a ``SWITCHBOARD_ACCESS_TOKENS`` token), else ``(none)``.
``user``: the signed-in user the session belongs to (``sessions.user_name``, README.md
"Claude Code for a whole organisation"), else ``(none)``. ``day``: the UTC day the usage was
recorded.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from typing import Final, Literal

import msgspec

from actors.config.settings import is_postgres_url, redact_url
from actors.store.sqlite_schema import USER_COLUMN, has_column
from actors.store.stores import require_psycopg
from protocol.errors import ConfigError
from protocol.pricing import PICO_PER_USD

By = Literal["session", "token", "user", "model", "day"]
BY: Final = ("session", "token", "user", "model", "day")
# Characters of an owner digest shown for a token the ledger has no name for.
DIGEST_SHOWN: Final = 12


class SpendGroup(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    messages: int
    input_tokens: int
    output_tokens: int
    cost_pico: int


def _sql(by: By, *, postgres: bool, limits: bool, users: bool = True) -> str:
    schema = "switchboard." if postgres else ""
    day = "to_char(u.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')" if postgres else "substr(u.recorded_at, 1, 10)"
    prefix = f"substr(s.owner, 1, {DIGEST_SHOWN})"
    token = f"COALESCE(l.name, {prefix}, '(none)')" if limits else f"COALESCE({prefix}, '(none)')"
    user = "COALESCE(s.user_name, '(none)')" if users else "'(none)'"
    key = {"session": "u.session_id", "model": "u.canonical", "day": day, "token": token, "user": user}[by]
    joins = f" LEFT JOIN {schema}sessions s ON s.session_id = u.session_id"
    if limits:
        joins += f" LEFT JOIN {schema}limits l ON l.token_hash = s.owner AND l.subject_kind = 'token'"
    part0 = "CASE WHEN u.part = 0 THEN 1 ELSE 0 END"
    return (
        f"SELECT {key} AS k, SUM({part0}), SUM(u.input_tokens), SUM(u.output_tokens), SUM(u.cost_pico) "
        f"FROM {schema}usage u{joins if by in ('token', 'user') else ''} GROUP BY k ORDER BY SUM(u.cost_pico) DESC, k"
    )


def read_spend(location: str, by: By) -> list[SpendGroup]:
    """The ledger's spend grouped ``by``, dearest first.

    Raises ConfigError when the ledger cannot be read."""
    if is_postgres_url(location):
        require_psycopg()
        import psycopg

        from actors.store.pg_connect import conninfo, message

        try:
            with psycopg.connect(conninfo(location)) as conn:
                conn.read_only = True
                rows = conn.execute(_sql(by, postgres=True, limits=True).encode()).fetchall()
        except psycopg.Error as exc:
            raise ConfigError(f"cannot read the cost ledger {redact_url(location)}: {message(exc)}") from exc
    else:
        try:
            db = sqlite3.connect(f"file:{location}?mode=ro", uri=True)
            try:
                limits = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'limits'").fetchone()
                users = has_column(db, "sessions", USER_COLUMN)
                rows = db.execute(_sql(by, postgres=False, limits=limits is not None, users=users)).fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot read the cost ledger {location!r}: {exc}") from exc
    return [
        SpendGroup(key=str(k), messages=int(m or 0), input_tokens=int(i or 0), output_tokens=int(o or 0), cost_pico=int(c or 0))
        for k, m, i, o, c in rows
    ]


def _usd(pico: int) -> str:
    return f"{pico / PICO_PER_USD:.6f}"


def render(groups: list[SpendGroup], by: By, fmt: Literal["text", "json", "csv"]) -> str:
    """``groups`` as a table (``text``), a JSON list, or CSV with a header row."""
    header = (by, "messages", "input_tokens", "output_tokens", "cost_usd")
    rows = [(g.key, g.messages, g.input_tokens, g.output_tokens, _usd(g.cost_pico)) for g in groups]
    if fmt == "json":
        data = [dict(zip(header, (*row[:4], round(g.cost_pico / PICO_PER_USD, 12)), strict=True)) for row, g in zip(rows, groups, strict=True)]
        return msgspec.json.format(msgspec.json.encode(data), indent=2).decode() + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue()
    table = [tuple(str(cell) for cell in header), *(tuple(str(cell) for cell in row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in table]
    return "\n".join(lines) + "\n"
