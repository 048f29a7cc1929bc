// A plain Node.js HTTP server, unchanged but for where it listens and how it stops: under
// herdsman it takes the inherited socket (fd 3); on its own it binds $PORT. Run it clustered
// on every core:
//
//   herdsman run --workers max --port 8000 -- node examples/node/server.js
'use strict';
const http = require('node:http');

let draining = false;

const server = http.createServer((request, response) => {
  // While draining, tell keep-alive clients to reconnect (to a worker that is not stopping)
  // instead of closing their connection under them.
  if (draining) response.setHeader('connection', 'close');
  response.setHeader('content-type', 'application/json');
  response.end(JSON.stringify({
    runtime: 'node',
    pid: process.pid,
    worker: process.env.HERDSMAN_WORKER_ID,
  }));
});

const inherited = process.env.LISTEN_FDS === '1' && Number(process.env.LISTEN_PID) === process.pid;
const where = inherited ? { fd: 3 } : { port: Number(process.env.PORT || 8000) };
server.listen(where, () => console.log(`node ${process.pid} serving`));

// Graceful stop on SIGTERM (herdsman's default) or SIGINT (PM2's): answer what comes in with
// `Connection: close`, exit as soon as no connection is left, and after a grace period stop
// listening and close what is idle (server.close() closes idle keep-alive connections at once,
// racing requests already on their way, so it comes last).
const GRACE_MS = 1000;
function drain() {
  if (draining) return;
  draining = true;
  const poll = setInterval(() => {
    server.getConnections((error, count) => {
      if (!error && count === 0) process.exit(0);
    });
  }, 20);
  setTimeout(() => {
    clearInterval(poll);
    server.close(() => process.exit(0));
  }, GRACE_MS);
}
process.on('SIGTERM', drain);
process.on('SIGINT', drain);
