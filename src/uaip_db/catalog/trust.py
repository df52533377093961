"""Objects another role put where the tool would run them as itself (issue 24).

Queries the tool runs must resolve to pg_catalog and to objects the connected role owns. Two
things in the schemas on a session's search_path break that:

- an operator, or a function or aggregate that shares a name with one of pg_catalog's, owned by
  another role: PostgreSQL's overload resolution picks the candidate with the more exact
  argument types whatever the search_path order, so `relname || text` can call a planted
  `public.||(name, text)` as whoever runs the query (the migration role, a superuser);
- a bookkeeping table (`alembic_version`, `uaip_db_*`: left out of the snapshot) that another
  role created first, or that carries a trigger, a rule or a row-security policy we never made:
  every write to it would run that code.

Extension members are trusted (their code is the extension's, whoever created it). Both queries
here are written so that nothing in them can resolve outside pg_catalog: every function and
table qualified, every operator spelled `OPERATOR(pg_catalog.=)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from uaip_db.errors import UntrustedObject

if TYPE_CHECKING:
    import psycopg

_EQ = "OPERATOR(pg_catalog.=)"
_NE = "OPERATOR(pg_catalog.<>)"
_CAT = "OPERATOR(pg_catalog.||)"
_ME = f"(SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname {_EQ} CURRENT_USER)"
_I_AM_SUPERUSER = (
    f"(SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname {_EQ} CURRENT_USER)"
)


def _untrusted(owner: str) -> str:
    """SQL: `owner` is neither us, nor a superuser (who could do anything anyway), nor a role we
    belong to (pg_has_role says yes to everything for a superuser: then only ourselves)."""
    return (
        f"({owner} {_NE} {_ME} "
        f"AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS s "
        f"WHERE s.oid {_EQ} {owner} AND s.rolsuper) "
        f"AND ({_I_AM_SUPERUSER} OR NOT pg_catalog.pg_has_role({owner}, 'MEMBER')))"
    )


def _not_from_extension(catalog: str, oid: str) -> str:
    # An array of the (few) extension members, not a correlated NOT EXISTS: with thousands of
    # planted operators the planner's nested loop over pg_depend took minutes.
    return (
        f"NOT {oid} {_EQ} ANY (ARRAY(SELECT d.objid FROM pg_catalog.pg_depend AS d "
        f"WHERE d.classid {_EQ} 'pg_catalog.{catalog}'::pg_catalog.regclass "
        f"AND d.deptype {_EQ} 'e'))"
    )


# Operators and routines that shadow pg_catalog's, owned by another role: (what, owner).
SHADOWS = f"""
SELECT 'operator ' {_CAT} o.oid::pg_catalog.regoperator::pg_catalog.text,
       pg_catalog.pg_get_userbyid(o.oprowner)::pg_catalog.text
  FROM pg_catalog.pg_operator AS o
  JOIN pg_catalog.pg_namespace AS n ON n.oid {_EQ} o.oprnamespace
 WHERE n.nspname {_EQ} ANY (%(schemas)s::pg_catalog.name[])
   AND {_untrusted("o.oprowner")} AND {_not_from_extension("pg_operator", "o.oid")}
UNION ALL
SELECT CASE WHEN p.prokind {_EQ} 'a' THEN 'aggregate ' ELSE 'function ' END
       {_CAT} p.oid::pg_catalog.regprocedure::pg_catalog.text,
       pg_catalog.pg_get_userbyid(p.proowner)::pg_catalog.text
  FROM pg_catalog.pg_proc AS p
  JOIN pg_catalog.pg_namespace AS n ON n.oid {_EQ} p.pronamespace
 WHERE n.nspname {_EQ} ANY (%(schemas)s::pg_catalog.name[])
   AND {_untrusted("p.proowner")} AND {_not_from_extension("pg_proc", "p.oid")}
   AND EXISTS (SELECT FROM pg_catalog.pg_proc AS q
                WHERE q.pronamespace {_EQ} 'pg_catalog'::pg_catalog.regnamespace
                  AND q.proname {_EQ} p.proname)
 ORDER BY 1
"""

# The project's bookkeeping tables (what the snapshot leaves out): Alembic's version table and
# every table whose name starts with the prefix (the ledger, the backfill progress).
VERSION_TABLE = "alembic_version"
BOOKKEEPING_PREFIX = "uaip_db_"


def is_bookkeeping(name: str) -> bool:
    """`name` (a table's, unqualified) is one of the project's bookkeeping tables."""
    return name == VERSION_TABLE or name.startswith(BOOKKEEPING_PREFIX)


# The bookkeeping relations, and code that runs when we write to them: (what, owner, problem).
_BOOKKEEPING = f"""
  FROM pg_catalog.pg_class AS c
  JOIN pg_catalog.pg_namespace AS n ON n.oid {_EQ} c.relnamespace
 WHERE n.nspname {_EQ} ANY (%(schemas)s::pg_catalog.name[])
   AND (c.relname {_EQ} '{VERSION_TABLE}'::pg_catalog.name
        OR pg_catalog.starts_with(c.relname::pg_catalog.text,
                                  '{BOOKKEEPING_PREFIX}'::pg_catalog.text))"""


def _on(catalog: str, relation: str) -> str:
    """The bookkeeping relations, joined to the rows of `catalog` that hang off them."""
    return _BOOKKEEPING.replace(
        "FROM pg_catalog.pg_class AS c",
        f"FROM pg_catalog.{catalog} JOIN pg_catalog.pg_class AS c ON c.oid {_EQ} {relation}",
    )


_TABLE = f"pg_catalog.quote_ident(n.nspname) {_CAT} '.' {_CAT} pg_catalog.quote_ident(c.relname)"
_OWNER = "pg_catalog.pg_get_userbyid(c.relowner)::pg_catalog.text"
BOOKKEEPING = f"""
SELECT 'table ' {_CAT} {_TABLE}, {_OWNER}, 'owner', 0
{_BOOKKEEPING} AND {_untrusted("c.relowner")}
UNION ALL
SELECT 'trigger ' {_CAT} pg_catalog.quote_ident(t.tgname) {_CAT} ' on ' {_CAT} {_TABLE}, {_OWNER},
       'trigger', 1
{_on("pg_trigger AS t", "t.tgrelid")}
   AND NOT t.tgisinternal
UNION ALL
SELECT 'rule ' {_CAT} pg_catalog.quote_ident(r.rulename) {_CAT} ' on ' {_CAT} {_TABLE}, {_OWNER},
       'rule', 1
{_on("pg_rewrite AS r", "r.ev_class")}
UNION ALL
SELECT 'policy ' {_CAT} pg_catalog.quote_ident(p.polname) {_CAT} ' on ' {_CAT} {_TABLE}, {_OWNER},
       'policy', 1
{_on("pg_policy AS p", "p.polrelid")}
 ORDER BY 4, 1
"""


# Which bookkeeping tables exist: (schema-qualified name, oid).
_PRESENT = f"""
SELECT {_TABLE}, c.oid::pg_catalog.int8
{_BOOKKEEPING} AND c.relkind {_EQ} ANY ('{{r,p}}'::pg_catalog."char"[])
"""


def bookkeeping_tables(conn: psycopg.Connection[Any], schemas: Sequence[str]) -> dict[str, int]:
    """The bookkeeping tables in `schemas` now, by qualified name (`public.alembic_version`),
    with their oids: a table dropped and made again has a new one."""
    rows = conn.execute(_PRESENT, {"schemas": list(schemas)}).fetchall()
    return {str(name): int(oid) for name, oid in rows}


def _me(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT CURRENT_USER::pg_catalog.text").fetchone()
    return str(row[0]) if row else "the connected role"


def check_shadows(conn: psycopg.Connection[Any], schemas: Sequence[str]) -> None:
    """Refuse (UntrustedObject) when `schemas` hold another role's operator, or its function or
    aggregate named like one of pg_catalog's: a query could resolve to it."""
    rows = conn.execute(SHADOWS, {"schemas": list(schemas)}).fetchall()
    if not rows:
        return
    what, owner = rows[0]
    others = f" and {len(rows) - 1} more like it" if len(rows) > 1 else ""
    raise UntrustedObject(
        f"Refusing to query the database: {what} (owner {owner}){others} shadows PostgreSQL's "
        f"own and would run as {_me(conn)}; drop it (DROP ROUTINE/OPERATOR ... as its owner or "
        "a superuser) and revoke CREATE on the schema from roles that should not have it."
    )


def check_bookkeeping(conn: psycopg.Connection[Any], schemas: Sequence[str]) -> None:
    """Refuse (UntrustedObject) when a bookkeeping table belongs to another role (not a
    superuser, nor one we belong to) or carries a
    trigger, a rule or a policy: writing to it (or reading it) would run their code."""
    rows = conn.execute(BOOKKEEPING, {"schemas": list(schemas)}).fetchall()
    if not rows:
        return
    me = _me(conn)
    what, owner, problem, _ = rows[0]
    others = f" ({len(rows) - 1} more problem(s) like it)" if len(rows) > 1 else ""
    if problem == "owner":
        found = f"{what} belongs to role {owner}, not {me}"
    else:
        found = f"{what} (owner {owner}) was not made by uaip-db"
    raise UntrustedObject(
        f"Refusing to use the migration bookkeeping: {found}{others}; the tool's own tables "
        f"must belong to {me} with no trigger, rule or policy: drop it (as its owner or a "
        "superuser) and run the command again."
    )


def check(conn: psycopg.Connection[Any], schemas: Sequence[str]) -> None:
    """Both checks: before a migration runs, and in db.check and db.verify."""
    check_bookkeeping(conn, schemas)
    check_shadows(conn, schemas)
