"""psycopg 3 against `spur serve-sql`, as an analyst's script uses it: the default
(transaction) mode, server-side parameters, prepared statements, session commands.
Prints one JSON report; the Rust test (`clients.rs`) checks it.

usage: psycopg_client.py <dsn> <forbidden statements as a JSON list>
"""
import datetime
import json
import sys

import psycopg

dsn, forbidden = sys.argv[1], json.loads(sys.argv[2])
report = {}
with psycopg.connect(dsn) as conn:
    # Default mode: psycopg sends BEGIN before the first query.
    cur = conn.execute(
        "SELECT count(*) FROM events WHERE dt = %s AND event_type = %s",
        [datetime.date(2025, 11, 29), "identify"],
    )
    report["identify_count"] = cur.fetchone()[0]
    report["in_transaction"] = conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    conn.commit()
    report["idle_after_commit"] = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    cur = conn.cursor()
    for _ in range(2):
        cur.execute(
            "SELECT event_id FROM events WHERE engaged_ms > %s ORDER BY event_id",
            [1500],
            prepare=True,
        )
    report["prepared_ids"] = [row[0] for row in cur.fetchall()]
    report["database"] = conn.execute("SELECT current_database()").fetchone()[0]
    conn.execute("SET application_name = 'notebook'")
    report["application_name"] = conn.execute("SHOW application_name").fetchone()[0]
    conn.rollback()
    refused = {}
    for sql in forbidden:
        try:
            conn.execute(sql)
            refused[sql] = "ran"
        except psycopg.Error as error:
            refused[sql] = f"{error.sqlstate} {error.diag.message_primary}"
        conn.rollback()
    report["refused"] = refused
    report["ssl"] = conn.pgconn.ssl_in_use
print(json.dumps(report))
