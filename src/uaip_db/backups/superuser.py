"""What only a superuser can restore, read from the source database's catalog when it is dumped.

A backup's restore check runs as the throwaway server's superuser, so "verified" proves a
superuser can restore it. Some objects no other role may create: event triggers, functions in
untrusted languages (C, plpython3u; leakproof ones too), untrusted procedural languages and
extensions, foreign-data wrappers, publications of all tables, subscriptions. The manifest
records them (`superuser_only`) with whether the dumping role was a superuser; `db.backup` and
`db.backups` name them, and a restore by a role that is not a superuser is refused before
anything is created. Objects owned by other roles need nothing more: restores use `--no-owner`,
so the restoring role owns what it creates. Extension members come with their extension.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uaip_db.errors import PrivilegeMissing
from uaip_db.pg import connection
from uaip_db.text import first_few

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from uaip_db.backups.manifest import Manifest
    from uaip_db.settings import DatabaseConfig


def _not_in_extension(catalog: str, alias: str) -> str:
    return (
        "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend AS d "
        f"WHERE d.classid = 'pg_catalog.{catalog}'::pg_catalog.regclass "
        f"AND d.objid = {alias}.oid AND d.deptype = 'e')"
    )


# Every name is schema-qualified: the dumping role's search_path decides nothing.
SUPERUSER_ONLY_QUERY = f"""
SELECT 'event trigger ' || pg_catalog.quote_ident(e.evtname)
FROM pg_catalog.pg_event_trigger AS e WHERE {_not_in_extension("pg_event_trigger", "e")}
UNION ALL
SELECT CASE WHEN l.lanpltrusted THEN 'leakproof function ' ELSE 'function ' END
       || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)
       || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')'
       || ' (language ' || pg_catalog.quote_ident(l.lanname) || ')'
FROM pg_catalog.pg_proc AS p
JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang
JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
WHERE (NOT l.lanpltrusted OR p.proleakproof)
  AND n.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'information_schema'])
  AND {_not_in_extension("pg_proc", "p")}
UNION ALL
SELECT 'language ' || pg_catalog.quote_ident(l.lanname)
FROM pg_catalog.pg_language AS l
WHERE l.lanispl AND NOT l.lanpltrusted AND {_not_in_extension("pg_language", "l")}
UNION ALL
SELECT 'extension ' || pg_catalog.quote_ident(x.extname)
FROM pg_catalog.pg_extension AS x
JOIN pg_catalog.pg_available_extension_versions AS v
  ON v.name OPERATOR(pg_catalog.=) x.extname AND v.version OPERATOR(pg_catalog.=) x.extversion
WHERE v.superuser AND NOT v.trusted
UNION ALL
SELECT 'foreign-data wrapper ' || pg_catalog.quote_ident(w.fdwname)
FROM pg_catalog.pg_foreign_data_wrapper AS w
WHERE {_not_in_extension("pg_foreign_data_wrapper", "w")}
UNION ALL
SELECT 'publication ' || pg_catalog.quote_ident(b.pubname)
FROM pg_catalog.pg_publication AS b WHERE b.puballtables
UNION ALL
SELECT 'subscription ' || pg_catalog.quote_ident(s.subname)
FROM pg_catalog.pg_subscription AS s
WHERE s.subdbid OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_database
                                        WHERE datname OPERATOR(pg_catalog.=)
                                              pg_catalog.current_database())
ORDER BY 1
"""
IS_SUPERUSER_QUERY = (
    "SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname OPERATOR(pg_catalog.=) %s"
)


def superuser_only(conn: psycopg.Connection[Any]) -> tuple[str, ...]:
    """The objects of the connected database only a superuser can restore, in words."""
    return tuple(str(row[0]) for row in conn.execute(SUPERUSER_ONLY_QUERY).fetchall())


def is_superuser(conn: psycopg.Connection[Any], role: str | None = None) -> bool:
    """Whether `role` (default: the connected role) is a superuser."""
    if role is None:
        row = conn.execute("SELECT pg_catalog.current_setting('is_superuser')").fetchone()
        return bool(row and row[0] == "on")
    row = conn.execute(IS_SUPERUSER_QUERY, (role,)).fetchone()
    return bool(row and row[0])


def note(manifest: Manifest) -> str | None:
    """`restorable by a superuser only: ...` for a backup that holds such objects, else None."""
    if not manifest.superuser_only:
        return None
    return f"restorable by a superuser only: {first_few(manifest.superuser_only)}"


def refuse_unless_superuser(
    admin: DatabaseConfig, target: DatabaseConfig, folder: Path, manifest: Manifest
) -> None:
    """A restore as a role that is not a superuser of a backup holding what only a superuser
    can restore: refused in one line, before anything is created (exit 2: the database
    settings name the wrong role for this backup; the backup itself is fine)."""
    if not manifest.superuser_only:
        return
    with connection(admin) as conn:
        if is_superuser(conn, target.user):
            return
    raise PrivilegeMissing(
        f"{folder.name} holds what only a superuser can restore "
        f"({first_few(manifest.superuser_only)}), and {target.user} is not one; nothing was "
        "created. Restore it as a superuser (DB_USER), or drop those from the source and back up "
        "again."
    )
