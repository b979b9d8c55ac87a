"""The fan-out baseline: stock flask-sse (its `sse` blueprint, one Redis pub/sub connection per
open stream), on the same Redis, served the same way as ours:

    gunicorn --config gunicorn.conf.py bench.stock_sse_app:app
"""

import os

from flask import Flask
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ["REDIS_URL"]
app.register_blueprint(sse, url_prefix="/stream")


@app.get("/healthz")
def healthz():
    return {"status": "ok"}
