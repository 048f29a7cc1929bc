"""Page views counted across every worker, in herdsman's shared-state store, through redis-py.

The same code works against a real Redis (`herdsman run --state redis://HOST:6379/0`):

    herdsman run --workers max --port 8000 -- python3 examples/python/counter.py
    curl localhost:8000/      → {"views": 1, "worker": "2", "pid": 4121}

redis-py reads herdsman's `unix:///…/state.sock` URL as it is (`redis.from_url`), in its
default protocol (RESP3 from redis-py 8 on, RESP2 before): the store speaks both.
"""

import json
import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis

url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
store = redis.from_url(url)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        views = store.incr("page_views")
        body = json.dumps(
            {"views": views, "worker": os.environ.get("HERDSMAN_WORKER_ID"), "pid": os.getpid()}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def make_server():
    inherited = os.environ.get("LISTEN_FDS") == "1" and os.environ.get("LISTEN_PID") == str(os.getpid())
    if not inherited:
        return ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler)
    listener = socket.socket(fileno=3)
    server = ThreadingHTTPServer(listener.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket = listener
    return server


server = make_server()
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever()
