-- Who owns the SoniqueBay database and what the workers may do in it: the one copy of this SQL,
-- applied by the postgresql role (tasks/database_roles.yml, after creating the database and after a
-- restore) and by the test suite (testkit/services.py). Run as a superuser connected to the
-- database, in one transaction, statement by statement (each ends with ";" and a blank line: split
-- there), with the parameters %(owner)s (the owner role) and %(workers)s (the workers' role)
-- bound client-side (psycopg2, psycopg's ClientCursor). Idempotent: the last statement says
-- whether ownership or privileges changed.
--
-- The owner role owns the database and every object in it and is the only one that changes the
-- schema (`soniquebay db upgrade` logs in as it). The workers' role owns nothing: it reads and
-- writes the rows (DML), uses the sequences and makes TEMP tables; it cannot create, alter, drop
-- or truncate a table.

-- Ownership and privileges in this database, as one checksum.
CREATE OR REPLACE TEMP VIEW soniquebay_catalog AS
SELECT md5(coalesce(string_agg(item, E'\n' ORDER BY item), '')) AS fingerprint FROM (
    SELECT 'database ' || datdba::regrole::text || ' ' || coalesce(datacl::text, '') AS item
      FROM pg_database WHERE datname = current_database()
    UNION ALL
    SELECT 'schema ' || nspname || ' ' || nspowner::regrole::text || ' ' || coalesce(nspacl::text, '')
      FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'
    UNION ALL
    SELECT 'relation ' || c.oid::regclass::text || ' ' || c.relowner::regrole::text || ' '
           || coalesce(c.relacl::text, '')
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
    UNION ALL
    SELECT 'default ' || defaclrole::regrole::text || ' ' || defaclnamespace::regnamespace::text || ' '
           || defaclobjtype::text || ' ' || defaclacl::text
      FROM pg_default_acl
    UNION ALL
    -- Objects other than relations (types, functions, schemas) by owner; not the temp tables of
    -- the sessions open now (a worker's insert stage keeps one for its session).
    SELECT 'owned ' || refobjid::regrole::text || ' ' || count(*)
      FROM pg_shdepend d
     WHERE deptype = 'o' AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND NOT (classid = 'pg_class'::regclass
                AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = d.objid AND c.relpersistence = 't'))
     GROUP BY refobjid
) AS catalog;

CREATE TEMP TABLE soniquebay_catalog_before ON COMMIT DROP AS SELECT fingerprint FROM soniquebay_catalog;

DO $roles$
DECLARE
    owner name := %(owner)s;
    workers name := %(workers)s;
BEGIN
    -- Releases before 0.4.0: the workers' role owned the database and every object in it.
    -- REASSIGN OWNED moves all that the role owns in this database (tables, their sequences and
    -- indexes, types, functions, the schema if it did), and the shared objects it owns (databases,
    -- tablespaces) whatever the database: it runs only when the role still owns something here.
    EXECUTE format('ALTER DATABASE %%I OWNER TO %%I', current_database(), owner);
    -- A running worker's temp table (its session's own) is no reason: moving it to the owner
    -- would take it from the worker.
    IF EXISTS (SELECT 1 FROM pg_shdepend d
                WHERE refobjid = (SELECT oid FROM pg_roles WHERE rolname = workers) AND deptype = 'o'
                  AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND NOT (classid = 'pg_class'::regclass
                           AND EXISTS (SELECT 1 FROM pg_class c
                                        WHERE c.oid = d.objid AND c.relpersistence = 't'))) THEN
        EXECUTE format('REASSIGN OWNED BY %%I TO %%I', workers, owner);
    END IF;
    -- PostgreSQL 15 already refuses CREATE in public to other roles; a cluster made by an older
    -- release let everyone create tables there.
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    -- TEMPORARY: the insert stage's incoming_tracks. A superuser's GRANT is made as the object's
    -- owner: the grantor is the owner role, so pg_dump keeps these grants with the objects.
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %%I TO %%I', current_database(), workers);
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %%I', workers);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %%I', workers);
    EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO %%I', workers);
    -- What the next migrations create gets the same.
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %%I IN SCHEMA public '
                   'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %%I', owner, workers);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %%I IN SCHEMA public '
                   'GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO %%I', owner, workers);
END
$roles$;

SELECT before.fingerprint IS DISTINCT FROM now.fingerprint AS changed
  FROM soniquebay_catalog_before AS before, soniquebay_catalog AS now;
