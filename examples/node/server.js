// A plain Node.js HTTP server, unchanged but for where it listens: under herdsman it takes the
// inherited socket (fd 3); on its own it binds $PORT. Run it clustered on every core:
//
//   herdsman run --workers max --port 8000 -- node examples/node/server.js
'use strict';
const http = require('node:http');

const server = http.createServer((request, response) => {
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

// Graceful stop: finish in-flight requests, close idle keep-alive connections, exit 0.
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
