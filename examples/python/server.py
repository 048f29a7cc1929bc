"""A Python HTTP server (standard library only) that takes herdsman's socket.

Under herdsman it serves the inherited socket (fd 3); on its own it binds $PORT. Run it
clustered on every core:

    herdsman run --workers max --port 8000 -- python3 examples/python/server.py

gunicorn (`gunicorn app:app`) and uvicorn (`uvicorn app:app --fd 3`) take the socket without
code like this; see the README.
"""

import json
import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(
            {"runtime": "python", "pid": os.getpid(), "worker": os.environ.get("HERDSMAN_WORKER_ID")}
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
# Graceful stop: serve_forever returns once it is told to, then server_close waits for the
# requests in progress (their threads are not daemons, so they are joined, not cut); exit 0.
# Each answer closes its connection (HTTP/1.0), so no keep-alive client is cut either.
server.daemon_threads = False
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
print(f"python {os.getpid()} serving", flush=True)
server.serve_forever()
server.server_close()
