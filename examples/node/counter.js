// Page views counted across every worker, in herdsman's shared-state store, through ioredis:
// the same code works against a real Redis (`herdsman run --state redis://HOST:6379/0`).
//
//   cd examples/node && npm ci
//   herdsman run --workers max --port 8000 -- node examples/node/counter.js
//   curl localhost:8000/      → {"views":1,"worker":"2","pid":4121}
'use strict';
const http = require('node:http');
const Redis = require('ioredis');

// herdsman hands workers `unix:///…/state.sock`; ioredis takes a socket as a plain path.
const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379/0';
const redis = new Redis(url.replace(/^unix:\/\//, ''));

let draining = false;
const server = http.createServer(async (request, response) => {
  if (draining) response.setHeader('connection', 'close');
  response.setHeader('content-type', 'application/json');
  try {
    const views = await redis.incr('page_views');
    response.end(JSON.stringify({ views, worker: process.env.HERDSMAN_WORKER_ID, pid: process.pid }));
  } catch (error) {
    response.statusCode = 503;
    response.end(JSON.stringify({ error: String(error) }));
  }
});

const inherited = process.env.LISTEN_FDS === '1' && Number(process.env.LISTEN_PID) === process.pid;
server.listen(inherited ? { fd: 3 } : { port: Number(process.env.PORT || 8000) });

function drain() {
  if (draining) return;
  draining = true;
  const poll = setInterval(() => {
    server.getConnections((error, count) => {
      if (!error && count === 0) redis.quit().finally(() => process.exit(0));
    });
  }, 20);
  setTimeout(() => {
    clearInterval(poll);
    server.close(() => redis.quit().finally(() => process.exit(0)));
  }, 1000);
}
process.on('SIGTERM', drain);
process.on('SIGINT', drain);
