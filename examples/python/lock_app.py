"""A critical section that one worker at a time enters, through redis-py's `lock()`.

Every worker takes the same lock in herdsman's shared-state store before a read-modify-write
that would lose updates if two workers overlapped. redis-py 8 talks its default protocol
(RESP3); the lock is Redis's documented pattern (SET NX PX, and Lua scripts to extend and
release only one's own token). The same code works against a real Redis.

    herdsman run --workers 2 --port 8000 -- python3 examples/python/lock_app.py
    curl localhost:8000/critical   → {"total": 1, "inside": 1, "rival_acquired": false, ...}
"""

import os
import time
from http.server import BaseHTTPRequestHandler

import redis

from listen import send_json, serve

store = redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        with store.lock("critical", timeout=10, blocking_timeout=15):
            # How many workers are in here now: 1 if the lock is exclusive.
            inside = store.incr("inside")
            # Another client asking for the held lock must be refused.
            rival_acquired = store.lock("critical", timeout=10).acquire(blocking=False)
            total = int(store.get("total") or 0) + 1
            time.sleep(0.01)
            store.set("total", total)
            store.decr("inside")
        send_json(
            self,
            {
                "total": total,
                "inside": inside,
                "rival_acquired": rival_acquired,
                "resp": store.client_info()["resp"],
                "worker": os.environ.get("HERDSMAN_WORKER_ID"),
                "pid": os.getpid(),
            }
        )

    def log_message(self, format, *args):
        pass


serve(Handler)
