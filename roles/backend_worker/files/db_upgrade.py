"""Run `soniquebay db upgrade` and say whether it changed the schema.

Run with the app's venv Python: argv = ENV_FILE SONIQUEBAY_COMMAND, the owner role's database URL
on stdin (no file holds it; it wins over the env file's). Loads the env file, takes a fingerprint
of the database schema (tables, columns, indexes, constraints) before and after the upgrade and
prints one JSON object {"changed": bool, "output": "..."}; exits with the upgrade's status. This
lets Ansible report changed only when a migration actually ran.
"""

import json
import os
import subprocess
import sys

import psycopg

FINGERPRINT = """
SELECT md5(coalesce(string_agg(item, E'\\n' ORDER BY item), '')) FROM (
    SELECT table_schema || '.' || table_name || '.' || column_name || ' ' || data_type || ' '
           || is_nullable || ' ' || coalesce(column_default, '') AS item
      FROM information_schema.columns
     WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
    UNION ALL
    SELECT schemaname || ' ' || indexdef FROM pg_indexes
     WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
    UNION ALL
    SELECT c.conrelid::regclass::text || ' ' || c.conname || ' ' || pg_get_constraintdef(c.oid)
      FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
) AS schema_items
"""


def load_env(path):
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                name, value = line.split("=", 1)
                if len(value) >= 2 and value[0] == value[-1] == "'":  # quoted as sh and systemd read it
                    value = value[1:-1]
                os.environ[name] = value


def fingerprint():
    with psycopg.connect(os.environ["SONIQUEBAY_DATABASE_URL"], connect_timeout=10) as conn:
        return conn.execute(FINGERPRINT).fetchone()[0]


def main():
    env_file, command = sys.argv[1], sys.argv[2]
    load_env(env_file)
    owner_url = sys.stdin.readline().strip()
    if owner_url:
        os.environ["SONIQUEBAY_DATABASE_URL"] = owner_url
    before = fingerprint()
    proc = subprocess.run([command, "db", "upgrade"], capture_output=True, text=True)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        print(json.dumps({"changed": False, "output": output, "rc": proc.returncode}))
        sys.exit(proc.returncode)
    print(json.dumps({"changed": fingerprint() != before, "output": output, "rc": 0}))


if __name__ == "__main__":
    main()
