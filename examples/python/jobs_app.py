"""A job queued by one worker and run by another, through rq on herdsman's store.

Each worker runs an rq worker (in its main thread, where rq wants its signal handlers) on a
queue of its own, `jobs-for-N`, and serves HTTP beside it: `GET /job?a=6&b=7` queues
`multiply` for the *other* worker and waits for its result (rq keeps results in a stream), so
the answer tells who added the job and who ran it. The same code works against a real Redis.

    herdsman run --workers 2 --port 8000 -- python3 examples/python/jobs_app.py
    curl 'localhost:8000/job?a=6&b=7'  → {"product": 42, "added_by": "1", "processed_by": "2", ...}
"""

import os
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

import redis
from rq import Queue, SimpleWorker

from listen import send_json, serve_in_background

me = os.environ.get("HERDSMAN_WORKER_ID", "1")
other = "2" if me == "1" else "1"


def multiply(a, b):
    """The job: run by the worker whose queue it was put on."""
    return {"product": a * b, "processed_by": os.environ.get("HERDSMAN_WORKER_ID")}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        query = parse_qs(urlparse(self.path).query)
        a, b = int(query["a"][0]), int(query["b"][0])
        job = Queue(f"jobs-for-{other}", connection=store).enqueue("jobs_app.multiply", a, b)
        result = job.latest_result(timeout=15)
        send_json(self, {**result.return_value, "added_by": me, "worker": me, "job": job.id, "pid": os.getpid()})

    def log_message(self, format, *args):
        pass


if __name__ == "__main__":
    store = redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    serve_in_background(Handler)
    # Warnings and errors only: rq logs every job at INFO.
    SimpleWorker([Queue(f"jobs-for-{me}", connection=store)], connection=store).work(logging_level="WARNING")
