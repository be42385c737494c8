#!/usr/bin/env python3
"""What SQLite's FTS5 search of the knowledge base cost per search, by number of tenants.

The schema and query of the SQL search that decision 0021 retired (migration 0016's
`knowledge_fts`, `tenant_id : "t" AND text : ("w"* OR …)`), the throughput bench's five FAQ
passages per tenant and its five questions (simulations/src/bench/setup.rs, as their
search words). Prints microseconds per search for each tenant count given:

    python3 scripts/fts-search-cost.py 20 200 2000 10000
"""
import sqlite3
import sys
import time

FAQ = [
    "We ship worldwide; delivery takes 3 to 5 business days and is free above 50 dollars.",
    "Returns are accepted within 30 days of delivery for a full refund, no questions asked.",
    "The shop is open Monday to Saturday from 9am to 7pm and on Sunday from 10am to 4pm.",
    "We accept credit cards, bank transfers and cash on delivery in the city centre.",
    "Prices include taxes; wholesale prices are available for orders of 100 units or more.",
]
QUESTION_WORDS = [
    ["ship", "abroad", "long", "delivery", "take"],
    ["return", "item", "refund"],
    ["opening", "hours", "sunday"],
    ["payment", "methods", "accept"],
    ["prices", "include", "taxes"],
]
SEARCH = (
    "SELECT c.id, d.id, d.title, c.text, -bm25(knowledge_fts, 1.0, 0.0) AS score "
    "FROM knowledge_fts CROSS JOIN knowledge_chunks c ON c.id = knowledge_fts.rowid "
    "CROSS JOIN knowledge_documents d ON d.id = c.document_id "
    "WHERE knowledge_fts MATCH ? AND c.tenant_id = ? ORDER BY score DESC, c.id LIMIT 3"
)
SEARCHES = 2000


def cost(tenants: int) -> float:
    db = sqlite3.connect(":memory:")
    db.executescript(
        """
        CREATE TABLE knowledge_documents (id INTEGER PRIMARY KEY, tenant_id TEXT, title TEXT);
        CREATE TABLE knowledge_chunks (id INTEGER PRIMARY KEY, document_id INTEGER,
            tenant_id TEXT, text TEXT);
        CREATE VIRTUAL TABLE knowledge_fts USING fts5(
            text, tenant_id, content = 'knowledge_chunks', content_rowid = 'id');
        """
    )
    for t in range(tenants):
        tenant = f"bench-{t:06}"
        document = db.execute(
            "INSERT INTO knowledge_documents (tenant_id, title) VALUES (?, 'FAQ')", (tenant,)
        ).lastrowid
        db.executemany(
            "INSERT INTO knowledge_chunks (document_id, tenant_id, text) VALUES (?, ?, ?)",
            [(document, tenant, passage) for passage in FAQ],
        )
    db.execute("INSERT INTO knowledge_fts (knowledge_fts) VALUES ('rebuild')")
    db.commit()
    started = time.perf_counter()
    for i in range(SEARCHES):
        tenant = f"bench-{i % tenants:06}"
        words = " OR ".join(f'"{w}"*' for w in QUESTION_WORDS[i % len(QUESTION_WORDS)])
        db.execute(SEARCH, (f'tenant_id : "{tenant}" AND text : ({words})', tenant)).fetchall()
    return (time.perf_counter() - started) / SEARCHES * 1e6


if __name__ == "__main__":
    print("sqlite", sqlite3.sqlite_version)
    for count in [int(arg) for arg in sys.argv[1:]] or [20, 200, 2000]:
        print(f"{count} tenants: {cost(count):.0f} µs per search")
