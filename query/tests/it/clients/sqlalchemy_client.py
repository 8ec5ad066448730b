"""SQLAlchemy (psycopg 3 dialect) against `spur serve-sql`: what a BI tool or a
notebook does first — connect, list tables and views, read columns — then a query
with bound parameters. Prints one JSON report; the Rust test checks it.

usage: sqlalchemy_client.py <url> <forbidden statements as a JSON list>
"""
import json
import sys

import sqlalchemy

url, forbidden = sys.argv[1], json.loads(sys.argv[2])
engine = sqlalchemy.create_engine(url)
inspector = sqlalchemy.inspect(engine)
report = {
    "tables": inspector.get_table_names(),
    "views": inspector.get_view_names(),
    "columns": {
        column["name"]: [str(column["type"]), column["nullable"]]
        for column in inspector.get_columns("events")
    },
}
with engine.connect() as conn:
    report["pageviews"] = conn.execute(
        sqlalchemy.text("SELECT count(*) FROM events WHERE event_type = :kind"),
        {"kind": "pageview"},
    ).scalar()
    refused = {}
    for sql in forbidden:
        try:
            conn.exec_driver_sql(sql)
            refused[sql] = "ran"
        except sqlalchemy.exc.DBAPIError as error:
            refused[sql] = f"{error.orig.sqlstate} {error.orig.diag.message_primary}"
        conn.rollback()
    report["refused"] = refused
print(json.dumps(report))
