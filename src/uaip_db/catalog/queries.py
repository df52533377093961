"""The catalog queries a snapshot runs: one per kind of object, each row a `key` and attributes.

An attribute that is NULL is left out of the snapshot. Attributes added after the first
snapshots were committed are NULL while they hold PostgreSQL's default (no storage options, row
security off, the default privileges...), so an object nobody touched keeps its JSON.

Privileges are read as lines like `reader: SELECT` or `PUBLIC: EXECUTE`, sorted, from the ACL;
an ACL that grants exactly what PostgreSQL grants a new object (`acldefault`) is left out, so
`GRANT` then `REVOKE` reads as untouched, as pg_dump does. The object's owner is written as
`(owner)` wherever it appears (grantee, grantor, policy role), because objects belong to
different roles on different machines, and a restore with `pg_restore --no-owner` gives them to
the role that restores: what the owner may do is part of the schema, who the owner is is not.
For the same reason default privileges (`ALTER DEFAULT PRIVILEGES`) set for the role taking the
snapshot name it `(current role)`. Other roles are named as they are: a grant to `reader` means
that role.
"""

from __future__ import annotations

OWNER = "(owner)"
CURRENT_ROLE = "(current role)"
PUBLIC = "PUBLIC"
# The public schema's own default since PostgreSQL 15 (owner: pg_database_owner): its owner may
# use it and create in it, everyone else may only use it. Older clusters also let PUBLIC create.
PUBLIC_SCHEMA_DEFAULT = "acldefault('n', n.nspowner) || makeaclitem(0, n.nspowner, 'USAGE', false)"
PUBLIC_SCHEMA_COMMENT = "standard public schema"


def _qualified(schema: str, name: str) -> str:
    """SQL for an object's name, prefixed with its schema unless that is public."""
    return f"CASE {schema} WHEN 'public' THEN '' ELSE {schema} || '.' END || {name}"


def _not_from_extension(catalog: str, oid: str) -> str:
    return (
        "NOT EXISTS (SELECT FROM pg_depend AS ext "
        f"WHERE ext.classid = '{catalog}'::regclass AND ext.objid = {oid} AND ext.deptype = 'e')"
    )


def _role(oid: str, owner: str) -> str:
    """SQL for a role's name in a snapshot: PUBLIC, (owner), or the role's name."""
    return (
        f"CASE {oid} WHEN 0 THEN '{PUBLIC}' WHEN {owner} THEN '{OWNER}' "
        f"ELSE pg_get_userbyid({oid})::text END"
    )


def _acl_lines(acl: str, owner: str) -> str:
    """SQL for an ACL as sorted lines, one per grantee and grantor (NULL when it grants nothing):
    `reader: SELECT, UPDATE WITH GRANT OPTION`, `(granted by x)` when the grantor is not the
    owner."""
    return f"""(SELECT array_agg(line ORDER BY line) FROM (
        SELECT {_role("g.grantee", owner)} || ': '
               || string_agg(g.privilege_type
                             || CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END,
                             ', ' ORDER BY g.privilege_type)
               || CASE WHEN g.grantor = {owner} THEN ''
                       ELSE ' (granted by ' || {_role("g.grantor", owner)} || ')' END AS line
          FROM aclexplode({acl}) AS g
         GROUP BY g.grantee, g.grantor) AS acl_lines)"""


def _privileges(acl: str, owner: str, default: str) -> str:
    """SQL for an object's privileges: NULL while they are its default ones.

    The ACL is compared with the default item by item, as sets (PostgreSQL keeps one item per
    grantee and grantor, so equal sets are equal lines): a new backend plans one aggregate
    instead of three, and a snapshot is mostly planning."""
    default_items = f"coalesce({default}, '{{}}'::aclitem[])"
    return (
        f"CASE WHEN {acl} IS NOT NULL "
        f"AND NOT ({acl} @> {default_items} AND {acl} <@ {default_items}) "
        f"THEN coalesce({_acl_lines(acl, owner)}, '{{}}'::text[]) END"
    )


def _options(options: str) -> str:
    """SQL for a text[] of `name=value` options, sorted; NULL when there are none."""
    return f"(SELECT array_agg(o ORDER BY o) FROM unnest({options}) AS o)"


def _comment(oid: str, catalog: str) -> str:
    return f"obj_description({oid}, '{catalog}')"


# The relations a snapshot covers; columns, constraints, indexes and triggers hang off these.
RELATIONS = f"""
WITH rel AS (
    SELECT c.oid, c.relkind, c.relowner, {_qualified("n.nspname", "c.relname")} AS name
    FROM pg_class AS c
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY(%(schemas)s)
      AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
      AND c.relname <> 'alembic_version'
      AND NOT starts_with(c.relname, 'uaip_db_')
      AND {_not_from_extension("pg_class", "c.oid")}
)
"""

EXTENSIONS = f"""
SELECT 'extension ' || x.extname AS key,
       x.extversion AS version,
       n.nspname AS schema,
       {_comment("x.oid", "pg_extension")} AS comment
FROM pg_extension AS x
JOIN pg_namespace AS n ON n.oid = x.extnamespace
WHERE x.extname <> 'plpgsql'
"""

# The public schema is there in every database: it is an object of the snapshot only when its
# privileges or its comment are not the ones every new database has. Its comment removed reads
# as '' (PostgreSQL stores no empty comment, so '' cannot be one).
SCHEMAS = f"""
SELECT key, comment, privileges FROM (
    SELECT 'schema ' || n.nspname AS key,
           CASE WHEN n.nspname <> 'public' THEN {_comment("n.oid", "pg_namespace")}
                WHEN {_comment("n.oid", "pg_namespace")}
                     IS DISTINCT FROM '{PUBLIC_SCHEMA_COMMENT}'
                THEN coalesce({_comment("n.oid", "pg_namespace")}, '') END AS comment,
           CASE WHEN n.nspname = 'public'
                THEN {_privileges("n.nspacl", "n.nspowner", PUBLIC_SCHEMA_DEFAULT)}
                ELSE {_privileges("n.nspacl", "n.nspowner", "acldefault('n', n.nspowner)")}
           END AS privileges
    FROM pg_namespace AS n
    WHERE n.nspname = ANY(%(schemas)s)
) AS schemas
WHERE key <> 'schema public' OR comment IS NOT NULL OR privileges IS NOT NULL
"""

# Storage options of a table and of its TOAST table (`toast.` prefixed), as pg_dump writes them.
_STORAGE_OPTIONS = _options(
    "c.reloptions || (SELECT array_agg('toast.' || o) FROM pg_class AS t, "
    "unnest(t.reloptions) AS o WHERE t.oid = c.reltoastrelid)"
)

TABLES = f"""{RELATIONS}
SELECT 'table ' || rel.name AS key,
       CASE c.relpersistence WHEN 'u' THEN 'unlogged' WHEN 't' THEN 'temporary'
            ELSE 'permanent' END AS persistence,
       pg_get_partkeydef(c.oid) AS partition_key,
       (SELECT array_agg({_qualified("pn.nspname", "p.relname")} ORDER BY i.inhseqno)
          FROM pg_inherits AS i
          JOIN pg_class AS p ON p.oid = i.inhparent
          JOIN pg_namespace AS pn ON pn.oid = p.relnamespace
         WHERE i.inhrelid = c.oid) AS inherits,
       pg_get_expr(c.relpartbound, c.oid) AS partition_bound,
       CASE WHEN c.reloftype <> 0 THEN format_type(c.reloftype, NULL) END AS of_type,
       CASE WHEN am.amname <> 'heap' THEN am.amname END AS access_method,
       {_STORAGE_OPTIONS} AS options,
       CASE c.relreplident WHEN 'n' THEN 'nothing' WHEN 'f' THEN 'full'
            WHEN 'i' THEN 'using index ' || (
                SELECT ic.relname FROM pg_index AS i JOIN pg_class AS ic ON ic.oid = i.indexrelid
                 WHERE i.indrelid = c.oid AND i.indisreplident) END AS replica_identity,
       NULLIF(c.relrowsecurity, false) AS row_security,
       NULLIF(c.relforcerowsecurity, false) AS force_row_security,
       {_privileges("c.relacl", "c.relowner", "acldefault('r', c.relowner)")} AS privileges,
       {_comment("c.oid", "pg_class")} AS comment
FROM rel
JOIN pg_class AS c ON c.oid = rel.oid
LEFT JOIN pg_am AS am ON am.oid = c.relam
WHERE rel.relkind IN ('r', 'p')
"""

COLUMNS = f"""{RELATIONS}
SELECT 'column ' || rel.name || '.' || a.attname AS key,
       format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull AS not_null,
       CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END AS default,
       CASE WHEN a.attgenerated = 's' THEN pg_get_expr(d.adbin, d.adrelid) END AS generated,
       CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END AS identity,
       CASE WHEN a.attcollation <> t.typcollation THEN co.collname END AS collation,
       CASE WHEN a.attstorage <> t.typstorage THEN
            CASE a.attstorage WHEN 'p' THEN 'plain' WHEN 'e' THEN 'external'
                 WHEN 'm' THEN 'main' WHEN 'x' THEN 'extended' END END AS storage,
       CASE a.attcompression WHEN 'p' THEN 'pglz' WHEN 'l' THEN 'lz4' END AS compression,
       CASE WHEN a.attstattarget >= 0 THEN a.attstattarget::integer END AS statistics,
       {_options("a.attoptions")} AS options,
       {_privileges("a.attacl", "rel.relowner", "NULL::aclitem[]")} AS privileges,
       col_description(a.attrelid, a.attnum) AS comment
FROM rel
JOIN pg_attribute AS a ON a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type AS t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation AS co ON co.oid = a.attcollation
WHERE rel.relkind IN ('r', 'p')
"""

CONSTRAINTS = f"""{RELATIONS}
SELECT 'constraint ' || rel.name || '.' || con.conname AS key,
       pg_get_constraintdef(con.oid, true) AS definition,
       con.condeferrable AS deferrable,
       con.condeferred AS initially_deferred,
       NULLIF(con.convalidated, true) AS validated,
       {_comment("con.oid", "pg_constraint")} AS comment
FROM rel
JOIN pg_constraint AS con ON con.conrelid = rel.oid
WHERE con.contype IN ('p', 'u', 'f', 'c', 'x')
"""

INDEXES = f"""{RELATIONS}
SELECT 'index ' || {_qualified("n.nspname", "ic.relname")} AS key,
       pg_get_indexdef(i.indexrelid) AS definition,
       i.indisunique AS unique,
       i.indisvalid AS valid,
       (SELECT con.conname FROM pg_constraint AS con
         WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid
           AND con.contype IN ('p', 'u', 'x')) AS constraint,
       NULLIF(i.indisclustered, false) AS clustered,
       (SELECT {_qualified("pn.nspname", "p.relname")} FROM pg_inherits AS h
          JOIN pg_class AS p ON p.oid = h.inhparent
          JOIN pg_namespace AS pn ON pn.oid = p.relnamespace
         WHERE h.inhrelid = i.indexrelid) AS partition_of,
       (SELECT jsonb_object_agg(a.attnum::text, a.attstattarget::integer)
          FROM pg_attribute AS a
         WHERE a.attrelid = i.indexrelid AND a.attstattarget >= 0) AS statistics,
       {_comment("i.indexrelid", "pg_class")} AS comment
FROM rel
JOIN pg_index AS i ON i.indrelid = rel.oid
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = ic.relnamespace
"""

SEQUENCES = f"""{RELATIONS}
SELECT 'sequence ' || rel.name AS key,
       format_type(s.seqtypid, NULL) AS data_type,
       s.seqstart AS start,
       s.seqincrement AS increment,
       s.seqmin AS minimum,
       s.seqmax AS maximum,
       s.seqcache AS cache,
       s.seqcycle AS cycle,
       owner.name || '.' || a.attname AS owned_by,
       CASE c.relpersistence WHEN 'u' THEN 'unlogged' END AS persistence,
       {_privileges("c.relacl", "c.relowner", "acldefault('s', c.relowner)")} AS privileges,
       {_comment("s.seqrelid", "pg_class")} AS comment
FROM rel
JOIN pg_sequence AS s ON s.seqrelid = rel.oid
JOIN pg_class AS c ON c.oid = rel.oid
LEFT JOIN pg_depend AS d
       ON d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
      AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
LEFT JOIN rel AS owner ON owner.oid = d.refobjid
LEFT JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
-- a sequence owned by a table the snapshot leaves out is left out with it
WHERE d.objid IS NULL OR owner.oid IS NOT NULL
"""

# A view's columns are not objects of their own; what is set on them is read with the view.
_VIEW_COLUMNS = f"""(SELECT jsonb_object_agg(a.attname, details) FROM (
        SELECT a.attname, jsonb_strip_nulls(jsonb_build_object(
                   'default', pg_get_expr(d.adbin, d.adrelid),
                   'statistics', CASE WHEN a.attstattarget >= 0
                                      THEN a.attstattarget::integer END,
                   'options', {_options("a.attoptions")},
                   'privileges', {_privileges("a.attacl", "c.relowner", "NULL::aclitem[]")},
                   'comment', col_description(a.attrelid, a.attnum))) AS details
          FROM pg_attribute AS a
          LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS a
        WHERE details <> '{{}}'::jsonb)"""

VIEWS = f"""{RELATIONS}
SELECT CASE rel.relkind WHEN 'm' THEN 'materialized view ' ELSE 'view ' END || rel.name AS key,
       pg_get_viewdef(rel.oid, true) AS definition,
       {_options("c.reloptions")} AS options,
       {_VIEW_COLUMNS} AS columns,
       {_privileges("c.relacl", "c.relowner", "acldefault('r', c.relowner)")} AS privileges,
       {_comment("rel.oid", "pg_class")} AS comment
FROM rel
JOIN pg_class AS c ON c.oid = rel.oid
WHERE rel.relkind IN ('v', 'm')
"""

# What CREATE AGGREGATE defined (a plain aggregate's prosrc is only `aggregate_dummy`).
_AGGREGATE = """(SELECT concat_ws(', ',
            'sfunc=' || ag.aggtransfn::regproc, 'stype=' || format_type(ag.aggtranstype, NULL),
            'finalfunc=' || NULLIF(ag.aggfinalfn, 0)::regproc,
            'combinefunc=' || NULLIF(ag.aggcombinefn, 0)::regproc,
            'msfunc=' || NULLIF(ag.aggmtransfn, 0)::regproc,
            'sortop=' || NULLIF(ag.aggsortop, 0)::regoperator,
            'initcond=' || ag.agginitval, 'minitcond=' || ag.aggminitval)
          FROM pg_aggregate AS ag WHERE ag.aggfnoid = p.oid)"""

FUNCTIONS = f"""
SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' WHEN 'a' THEN 'aggregate '
            WHEN 'w' THEN 'window function ' ELSE 'function ' END
       || {_qualified("n.nspname", "p.proname")} || '(' || oidvectortypes(p.proargtypes) || ')'
       AS key,
       pg_get_function_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS result,
       l.lanname AS language,
       CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable'
            ELSE 'volatile' END AS volatility,
       p.proisstrict AS strict,
       p.prosecdef AS security_definer,
       NULLIF(p.proleakproof, false) AS leakproof,
       CASE p.proparallel WHEN 's' THEN 'safe' WHEN 'r' THEN 'restricted'
            ELSE 'unsafe' END AS parallel,
       -- the planner's estimates, when not the defaults CREATE FUNCTION gives
       CASE WHEN p.procost <> CASE WHEN l.lanname IN ('c', 'internal') THEN 1 ELSE 100 END
            THEN to_jsonb(p.procost::numeric) END AS cost,
       CASE WHEN p.proretset AND p.prorows <> 1000 THEN to_jsonb(p.prorows::numeric) END AS rows,
       CASE WHEN p.prosupport <> 0 THEN p.prosupport::regproc::text END AS support,
       p.proconfig AS settings,
       {_AGGREGATE} AS aggregate,
       -- SQL-standard bodies (BEGIN ATOMIC) keep no source text
       coalesce(pg_get_function_sqlbody(p.oid), p.prosrc) AS body,
       {_privileges("p.proacl", "p.proowner", "acldefault('f', p.proowner)")} AS privileges,
       {_comment("p.oid", "pg_proc")} AS comment
FROM pg_proc AS p
JOIN pg_namespace AS n ON n.oid = p.pronamespace
JOIN pg_language AS l ON l.oid = p.prolang
WHERE n.nspname = ANY(%(schemas)s)
  AND {_not_from_extension("pg_proc", "p.oid")}
"""

_ENABLED = "WHEN 'O' THEN 'enabled' WHEN 'D' THEN 'disabled' WHEN 'R' THEN 'replica only' " + (
    "WHEN 'A' THEN 'always'"
)

TRIGGERS = f"""{RELATIONS}
SELECT 'trigger ' || rel.name || '.' || t.tgname AS key,
       pg_get_triggerdef(t.oid, true) AS definition,
       CASE t.tgenabled {_ENABLED} END AS state,
       {_comment("t.oid", "pg_trigger")} AS comment
FROM rel
JOIN pg_trigger AS t ON t.tgrelid = rel.oid
WHERE NOT t.tgisinternal
"""

# A view's own `_RETURN` rule is its definition, read with the view.
RULES = f"""{RELATIONS}
SELECT 'rule ' || rel.name || '.' || r.rulename AS key,
       pg_get_ruledef(r.oid, true) AS definition,
       CASE r.ev_enabled {_ENABLED} END AS state,
       {_comment("r.oid", "pg_rewrite")} AS comment
FROM rel
JOIN pg_rewrite AS r ON r.ev_class = rel.oid
WHERE r.rulename <> '_RETURN'
"""

POLICIES = f"""{RELATIONS}
SELECT 'policy ' || rel.name || '.' || p.polname AS key,
       CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
            WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS command,
       p.polpermissive AS permissive,
       (SELECT array_agg(role ORDER BY role)
          FROM (SELECT {_role("r.oid", "rel.relowner")} AS role
                  FROM unnest(p.polroles) AS r(oid)) AS roles) AS roles,
       pg_get_expr(p.polqual, p.polrelid) AS using,
       pg_get_expr(p.polwithcheck, p.polrelid) AS with_check,
       {_comment("p.oid", "pg_policy")} AS comment
FROM rel
JOIN pg_policy AS p ON p.polrelid = rel.oid
"""

STATISTICS = f"""{RELATIONS}
SELECT 'statistics ' || {_qualified("n.nspname", "s.stxname")} AS key,
       pg_get_statisticsobjdef(s.oid) AS definition,
       CASE WHEN s.stxstattarget >= 0 THEN s.stxstattarget::integer END AS statistics,
       {_comment("s.oid", "pg_statistic_ext")} AS comment
FROM rel
JOIN pg_statistic_ext AS s ON s.stxrelid = rel.oid
JOIN pg_namespace AS n ON n.oid = s.stxnamespace
"""


def _types(kind: str, joins: str = "") -> str:
    """SQL: FROM the types of one kind (`typtype`) in the schemas, with `joins` to more."""
    return f"""
FROM pg_type AS t
JOIN pg_namespace AS n ON n.oid = t.typnamespace
{joins}
WHERE n.nspname = ANY(%(schemas)s)
  AND t.typtype = '{kind}'
  AND {_not_from_extension("pg_type", "t.oid")}
"""


_TYPE_PRIVILEGES = _privileges("t.typacl", "t.typowner", "acldefault('T', t.typowner)")

ENUMS = f"""
SELECT 'enum ' || {_qualified("n.nspname", "t.typname")} AS key,
       (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)
          FROM pg_enum AS e WHERE e.enumtypid = t.oid) AS labels,
       {_TYPE_PRIVILEGES} AS privileges,
       {_comment("t.oid", "pg_type")} AS comment
{_types("e")}"""

_DOMAIN_JOINS = """
JOIN pg_type AS b ON b.oid = t.typbasetype
LEFT JOIN pg_collation AS co ON co.oid = t.typcollation"""

DOMAINS = f"""
SELECT 'domain ' || {_qualified("n.nspname", "t.typname")} AS key,
       format_type(t.typbasetype, t.typtypmod) AS type,
       t.typnotnull AS not_null,
       pg_get_expr(t.typdefaultbin, 0) AS default,
       CASE WHEN t.typcollation <> b.typcollation THEN co.collname END AS collation,
       (SELECT array_agg(con.conname || ': ' || pg_get_constraintdef(con.oid, true)
                         ORDER BY con.conname)
          FROM pg_constraint AS con WHERE con.contypid = t.oid) AS constraints,
       {_TYPE_PRIVILEGES} AS privileges,
       {_comment("t.oid", "pg_type")} AS comment
{_types("d", _DOMAIN_JOINS)}"""

COMPOSITE_TYPES = f"""
SELECT 'composite type ' || {_qualified("n.nspname", "t.typname")} AS key,
       (SELECT array_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                         || CASE WHEN a.attcollation <> at.typcollation
                                 THEN ' COLLATE ' || quote_ident(co.collname) ELSE '' END
                         ORDER BY a.attnum)
          FROM pg_attribute AS a
          JOIN pg_type AS at ON at.oid = a.atttypid
          LEFT JOIN pg_collation AS co ON co.oid = a.attcollation
         WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) AS attributes,
       (SELECT jsonb_object_agg(a.attname, col_description(a.attrelid, a.attnum))
          FROM pg_attribute AS a
         WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
           AND col_description(a.attrelid, a.attnum) IS NOT NULL) AS attribute_comments,
       {_TYPE_PRIVILEGES} AS privileges,
       {_comment("t.oid", "pg_type")} AS comment
{_types("c")}
  AND (SELECT c.relkind FROM pg_class AS c WHERE c.oid = t.typrelid) = 'c'
"""

_RANGE_JOINS = """
JOIN pg_range AS r ON r.rngtypid = t.oid
JOIN pg_opclass AS oc ON oc.oid = r.rngsubopc
LEFT JOIN pg_collation AS co ON co.oid = r.rngcollation"""

RANGE_TYPES = f"""
SELECT 'range type ' || {_qualified("n.nspname", "t.typname")} AS key,
       format_type(r.rngsubtype, NULL) AS subtype,
       CASE WHEN r.rngcollation <> 0 THEN co.collname END AS collation,
       oc.opcname AS subtype_opclass,
       CASE WHEN r.rngcanonical <> 0 THEN r.rngcanonical::regproc::text END AS canonical,
       CASE WHEN r.rngsubdiff <> 0 THEN r.rngsubdiff::regproc::text END AS subtype_diff,
       format_type(r.rngmultitypid, NULL) AS multirange,
       {_TYPE_PRIVILEGES} AS privileges,
       {_comment("t.oid", "pg_type")} AS comment
{_types("r", _RANGE_JOINS)}"""

# Default privileges apply to the objects a role creates later (the next migration's tables).
DEFAULT_PRIVILEGES = f"""
SELECT 'default privileges '
       || CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences'
               WHEN 'f' THEN 'functions' WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' END
       || CASE WHEN d.defaclnamespace = 0 THEN '' ELSE ' in ' || n.nspname END
       || ' for ' || CASE WHEN d.defaclrole = (SELECT oid FROM pg_roles
                                                WHERE rolname = current_user)
                          THEN '{CURRENT_ROLE}' ELSE pg_get_userbyid(d.defaclrole)::text END
       AS key,
       coalesce({_acl_lines("d.defaclacl", "d.defaclrole")}, '{{}}'::text[]) AS privileges
FROM pg_default_acl AS d
LEFT JOIN pg_namespace AS n ON n.oid = d.defaclnamespace
WHERE d.defaclnamespace = 0 OR n.nspname = ANY(%(schemas)s)
"""

# Event triggers belong to the database, not to a schema; they run on every migration's DDL.
EVENT_TRIGGERS = f"""
SELECT 'event trigger ' || e.evtname AS key,
       e.evtevent AS event,
       e.evttags AS tags,
       e.evtfoid::regprocedure::text AS function,
       CASE e.evtenabled {_ENABLED} END AS state,
       {_comment("e.oid", "pg_event_trigger")} AS comment
FROM pg_event_trigger AS e
WHERE {_not_from_extension("pg_event_trigger", "e.oid")}
"""

# Kinds of objects this project does not use are still seen coming and going, by name: each
# records a dependency on its schema. (Their definitions are not compared.)
OTHER_CATALOGS = (
    "pg_operator",
    "pg_opclass",
    "pg_opfamily",
    "pg_collation",
    "pg_conversion",
    "pg_ts_config",
    "pg_ts_dict",
    "pg_ts_parser",
    "pg_ts_template",
)
OTHER_KINDS = (
    "text search configuration",
    "text search dictionary",
    "text search template",
    "text search parser",
    "operator family",
    "operator class",
    "foreign table",
    "conversion",
    "collation",
    "base type",
    "operator",
)
_OTHER_CATALOGS = ", ".join(f"'{catalog}'::regclass" for catalog in OTHER_CATALOGS)

OTHERS = f"""
SELECT CASE WHEN d.classid = 'pg_type'::regclass THEN 'base type' ELSE o.type END || ' '
       || CASE WHEN starts_with(o.identity, 'public.') THEN substr(o.identity, 8)
               ELSE o.identity END AS key,
       obj_description(d.objid, d.classid::regclass::name) AS comment
FROM pg_depend AS d
JOIN pg_namespace AS n ON n.oid = d.refobjid
CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, 0) AS o
WHERE d.refclassid = 'pg_namespace'::regclass AND d.deptype = 'n'
  AND n.nspname = ANY(%(schemas)s)
  AND (d.classid IN ({_OTHER_CATALOGS})
       OR d.classid = 'pg_class'::regclass
          AND (SELECT c.relkind FROM pg_class AS c WHERE c.oid = d.objid) = 'f'
       OR d.classid = 'pg_type'::regclass
          AND (SELECT t.typtype FROM pg_type AS t WHERE t.oid = d.objid) = 'b')
  AND NOT EXISTS (SELECT FROM pg_depend AS ext
                   WHERE ext.classid = d.classid AND ext.objid = d.objid AND ext.deptype = 'e')
"""

QUERIES = (
    EXTENSIONS,
    SCHEMAS,
    TABLES,
    COLUMNS,
    CONSTRAINTS,
    INDEXES,
    SEQUENCES,
    VIEWS,
    FUNCTIONS,
    TRIGGERS,
    RULES,
    POLICIES,
    STATISTICS,
    ENUMS,
    DOMAINS,
    COMPOSITE_TYPES,
    RANGE_TYPES,
    DEFAULT_PRIVILEGES,
    EVENT_TRIGGERS,
    OTHERS,
)
