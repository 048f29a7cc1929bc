// One rate limit for the whole cluster, through rate-limiter-flexible's RateLimiterRedis on
// ioredis, set up as its README does: every worker counts into the same key of herdsman's
// shared-state store (a Lua script per attempt), so 10 attempts a minute means 10 in all, not
// 10 per worker. The same code works against a real Redis.
//
//   cd examples/node && npm ci
//   herdsman run --workers 2 --port 8000 -- node examples/node/rate-limit-app.js
//   curl localhost:8000/attempt   → {"allowed":true,"remaining":9,"worker":"1","pid":4121}
//                                  (HTTP 429 and "allowed":false past the limit)
'use strict';
const http = require('node:http');
const Redis = require('ioredis');
const { RateLimiterRedis } = require('rate-limiter-flexible');

// herdsman hands workers `unix:///…/state.sock`; ioredis takes a socket as a plain path.
const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379/0';
const redis = new Redis(url.replace(/^unix:\/\//, ''), { enableOfflineQueue: false });
redis.on('error', (error) => console.error(`redis error: ${error.message}`));

const limiter = new RateLimiterRedis({
  storeClient: redis,
  keyPrefix: 'attempts',
  points: 10,
  duration: 60,
});

function answer(response, status, fields) {
  const body = JSON.stringify({ ...fields, worker: process.env.HERDSMAN_WORKER_ID, pid: process.pid });
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
  });
  response.end(body);
}

const server = http.createServer(async (request, response) => {
  try {
    const granted = await limiter.consume('everyone');
    answer(response, 200, { allowed: true, remaining: granted.remainingPoints });
  } catch (refusal) {
    if (refusal instanceof Error) {
      console.error(`rate limiter failed: ${refusal.message}`);
      answer(response, 500, { error: refusal.message });
    } else {
      answer(response, 429, { allowed: false, retry_ms: refusal.msBeforeNext });
    }
  }
});

// Listen once the store is reachable: with no offline queue an early attempt would fail.
// Then say so: `process.send('ready')` is PM2's `wait_ready` signal, which herdsman takes too.
redis.once('ready', () =>
  server.listen(Number(process.env.PORT || 8000), () => process.send?.('ready')),
);
// Stopped by SIGTERM, or by Node's cluster disconnect (herdsman's polite stop of a Node worker):
// the open store connection would keep the process alive, so close it too.
function stop() {
  server.close(() => redis.quit().finally(() => process.exit(0)));
}
process.on('SIGTERM', stop);
process.on('disconnect', stop);
