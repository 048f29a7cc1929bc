"""Serving an HTTP handler under herdsman or alone, and answering JSON, for the shared-state
examples.

Under herdsman a worker serves the inherited socket (fd 3, `LISTEN_FDS`); alone it binds
$PORT. `serve_in_background` leaves the main thread to a library that needs it (a Celery
worker installs its signal handlers there).
"""

import json
import os
import signal
import socket
import threading
from http.server import ThreadingHTTPServer


def make_server(handler):
    inherited = os.environ.get("LISTEN_FDS") == "1" and os.environ.get("LISTEN_PID") == str(os.getpid())
    if not inherited:
        return ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), handler)
    listener = socket.socket(fileno=3)
    server = ThreadingHTTPServer(listener.getsockname()[:2], handler, bind_and_activate=False)
    server.socket = listener
    return server


def notify_ready():
    """Says the server serves: `READY=1` on $NOTIFY_SOCKET (sd_notify), which herdsman and
    systemd take, so that a worker slow to start is not counted ready before it serves."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.sendto(b"READY=1", path)


def serve(handler):
    """Serves until SIGTERM."""
    server = make_server(handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    notify_ready()
    server.serve_forever()


def serve_in_background(handler):
    server = make_server(handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    notify_ready()
    return server


def send_json(handler, fields):
    """Answers the request `handler` serves with `fields` as JSON."""
    body = json.dumps(fields).encode()
    handler.send_response(200)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
