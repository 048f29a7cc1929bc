"""redis-py in its default protocol (RESP3 from redis-py 8 on) against the store in $REDIS_URL:
GET/SET, HGETALL as a dict, SMEMBERS as a set, pub/sub, and the WATCH/MULTI pipeline that
optimistic locking is built on, aborted by a concurrent write. Prints `ok` and the protocol."""
import os
import sys
import threading

import redis

url = os.environ["REDIS_URL"]
r = redis.Redis.from_url(url, decode_responses=True)
assert r.ping() is True
hello = r.execute_command("HELLO")
assert hello["proto"] == 3, hello
assert r.set("greeting", "hello") is True
assert r.get("greeting") == "hello"
assert r.get("missing") is None
r.hset("user:1", mapping={"name": "ada", "visits": "1"})
assert r.hgetall("user:1") == {"name": "ada", "visits": "1"}, r.hgetall("user:1")
r.sadd("tags", "a", "b")
assert r.smembers("tags") == {"a", "b"}
assert r.incrbyfloat("float", 3000) == 3000.0
assert r.client_info()["addr"], r.client_info()

# pub/sub: a subscriber on its own connection gets the message as a push.
pubsub = r.pubsub()
pubsub.subscribe("news")
confirmation = pubsub.get_message(timeout=5)
assert confirmation["type"] == "subscribe", confirmation
assert r.publish("news", "extra") == 1
message = pubsub.get_message(timeout=5)
assert message["type"] == "message" and message["data"] == "extra", message
pubsub.close()

# WATCH / MULTI / EXEC: a transaction whose watched key changed is refused with WatchError.
r.set("balance", 10)
with r.pipeline() as pipe:
    pipe.watch("balance")
    current = int(pipe.get("balance"))
    other = redis.Redis.from_url(url)
    other.set("balance", 99)
    pipe.multi()
    pipe.set("balance", current - 1)
    try:
        pipe.execute()
        sys.exit("EXEC ran although the watched key changed")
    except redis.WatchError:
        pass
assert r.get("balance") == "99"
# The same without interference commits; redis-py's transaction() helper retries on its own.
def spend(pipe):
    value = int(pipe.get("balance"))
    pipe.multi()
    pipe.set("balance", value - 1)
r.transaction(spend, "balance")
assert r.get("balance") == "98"
print("ok", redis.__version__, hello["proto"])
