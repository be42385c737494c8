#!/usr/bin/env python3
"""Peak memory of erasing one tenant's messages on SQLite: one DELETE against batches of 500.

Applies the repository's SQLite migrations to a fresh file, seeds N inbound messages of one
tenant (five per conversation), then runs the erasure's deletes in a fresh process per run,
on a fresh copy, with the writer's pragmas and an UPDATE first in the same transaction (as
`delete_tenant` does). Prints the deletes' time, the bytes they wrote (`wchar`) and the
process's peak RSS. `--tenant-condition` adds a run with `tenant_id = ?1 AND` in the batched
delete, which makes SQLite walk the tenant's index over every row left, each batch:

    python3 scripts/erase-memory.py 500000 [--tenant-condition]
"""
import glob
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIGRATIONS = sorted(glob.glob(os.path.join(ROOT, "migrations", "sqlite", "*.sql")))


def pragmas(temp_store):
    return (
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; "
        f"PRAGMA busy_timeout = 5000; PRAGMA cache_size = -32768; PRAGMA temp_store = {temp_store};"
    )


def seed(path, n):
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
    for migration in MIGRATIONS:
        with open(migration) as f:
            db.executescript(f.read())
    db.execute("BEGIN")
    for tenant in ("big", "other"):
        db.execute("INSERT INTO tenants (id, name, created_ms) VALUES (?, ?, 0)", (tenant, tenant))
    numbers = "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < ? - 1) "
    db.execute(
        numbers + "INSERT INTO conversations (tenant_id, chat_id, last_inbound_ms) "
        "SELECT 'big', 'c' || (i / 5), 0 FROM k WHERE i % 5 = 0",
        (n,),
    )
    db.execute(
        numbers + "INSERT INTO messages (tenant_id, chat_id, direction, wamid, kind, body, raw, "
        "created_ms) SELECT 'big', 'c' || (i / 5), 'inbound', "
        "'wamid.HBgLMTU1NTAwMDAwMDAVAgASGBQzQUJDRE' || i, 'text', "
        "'Hello, do you have the blue one in size 42? ' || i, "
        "'{\"id\":\"' || i || '\",\"type\":\"text\"}', i FROM k",
        (n,),
    )
    db.execute("COMMIT")
    db.close()


def wchar():
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("wchar")).split()[1])


def erase(path, temp_store, mode):
    batched = mode != "one"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(pragmas(temp_store))
    started, written = time.time(), wchar()
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE tenants SET deleted_ms = 1 WHERE id = 'big'")
    if batched:
        condition = "tenant_id = ?1 AND " if mode == "batched-tenant" else ""
        delete = (
            f"DELETE FROM messages WHERE {condition}id IN "
            "(SELECT id FROM messages WHERE tenant_id = ?1 LIMIT 500)"
        )
        while db.execute(delete, ("big",)).rowcount >= 500:
            pass
    else:
        db.execute("DELETE FROM messages WHERE tenant_id = 'big'")
    written = wchar() - written
    db.execute("COMMIT")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    how = {
        "one": "one statement",
        "batched": "500 rows per statement",
        "batched-tenant": "500 rows per statement, tenant_id = ?1 AND id IN (...)",
    }[mode]
    print(
        f"{how}, temp_store = {temp_store}: {time.time() - started:.1f} s, "
        f"{written / 2**20:.0f} MiB written by the deletes, peak RSS {peak:.0f} MiB"
    )


def main():
    if len(sys.argv) == 4 and sys.argv[3] in ("one", "batched", "batched-tenant"):
        erase(sys.argv[1], sys.argv[2], sys.argv[3])
        return
    args = [a for a in sys.argv[1:] if a != "--tenant-condition"]
    n = int(args[0]) if args else 500_000
    runs = [("FILE", "one"), ("MEMORY", "one"), ("MEMORY", "batched")]
    if "--tenant-condition" in sys.argv:
        runs.append(("MEMORY", "batched-tenant"))
    with tempfile.TemporaryDirectory() as work:
        base = os.path.join(work, "base.db")
        seed(base, n)
        print(f"SQLite {sqlite3.sqlite_version}, {n} messages of one tenant, "
              f"{os.path.getsize(base) // 2**20} MiB")
        for temp_store, mode in runs:
            copy = os.path.join(work, "copy.db")
            shutil.copy(base, copy)
            subprocess.run([sys.executable, __file__, copy, temp_store, mode], check=True)
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(copy + suffix):
                    os.remove(copy + suffix)


if __name__ == "__main__":
    main()
