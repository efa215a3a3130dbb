"""The floor: the least this stack can do to answer a request from the database.

A minimal Flask app that serves one stored JSON document by primary key, over the same
database driver and pool settings as the service, under the same server settings. Each
scenario's throughput is reported as a ratio to it.

    gunicorn 'bench.floor:app' (IPT_DATABASE_URL names the database)
"""

from __future__ import annotations

import os

from flask import Flask, Response
from sqlalchemy import create_engine, text

from service.db import normalise_url

_url = normalise_url(os.environ["IPT_DATABASE_URL"])
_options = {} if _url.get_backend_name() == "sqlite" else {"pool_size": 10, "max_overflow": 10}
engine = create_engine(_url, **_options)
_QUERY = text("SELECT content FROM stored_resources WHERE resource_type = 'CarePlan' AND id = :id")

app = Flask(__name__)


@app.get("/row/<resource_id>")
def row(resource_id: str) -> Response:
    with engine.connect() as connection:
        content = connection.execute(_QUERY, {"id": resource_id}).scalar()
    if content is None:
        return Response(status=404)
    return Response(content, mimetype="application/fhir+json")


@app.get("/ready")
def ready() -> Response:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return Response(status=200)
