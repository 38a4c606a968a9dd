-- The two catalog queries `runtime.schema.catalog.actual_from_catalog` reads.
-- Both take one parameter, the table names of schema.json (a list, bound as text[]), and
-- also return every table the runtime created (marked by its table comment, see
-- runtime.schema.tables.MANAGED_COMMENT), so a table removed from schema.json is seen and
-- its drop planned; tables made by hand are never returned. `public` schema only, never
-- the runtime's own `_runtime_*` tables.

-- name: columns
-- (table_name, column_name, data_type, is_nullable, column_default), one row per column;
-- data_type in format_type() spelling, e.g. `uuid[]`, `timestamp with time zone`.
SELECT c.relname::text AS table_name,
       a.attname::text AS column_name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS data_type,
       NOT a.attnotnull AS is_nullable,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS column_default
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid
LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = 'public'
  AND c.relkind IN ('r', 'p')
  AND NOT c.relispartition
  AND a.attnum > 0
  AND NOT a.attisdropped
  AND (c.relname::text = ANY(%s::text[])
       OR pg_catalog.obj_description(c.oid, 'pg_class') = 'swarm-runtime: schema.json table')
  AND NOT starts_with(c.relname::text, '_runtime_')
ORDER BY c.relname, a.attnum;

-- name: indexes
-- (tablename, indexname, indexdef), one row per index; primary keys and indexes not named
-- `<table>__*` are returned too and ignored by actual_from_catalog.
SELECT tablename::text AS tablename,
       indexname::text AS indexname,
       indexdef
FROM pg_catalog.pg_indexes
WHERE schemaname = 'public'
  AND (tablename::text = ANY(%s::text[])
       OR pg_catalog.obj_description(
            (quote_ident(schemaname) || '.' || quote_ident(tablename))::regclass, 'pg_class'
          ) = 'swarm-runtime: schema.json table')
  AND NOT starts_with(tablename::text, '_runtime_')
ORDER BY tablename, indexname;
