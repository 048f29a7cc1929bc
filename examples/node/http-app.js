// A plain `node:http` server that binds its port itself, as any Node tutorial writes it: the
// port (and host) from its arguments, else $PORT. Under herdsman, `listen()` in a worker asks
// the primary for that address, which binds it once for all workers, as Node's primary does.
//
//   herdsman run --workers 2 -- node examples/node/http-app.js 8080 127.0.0.1
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const port = Number(process.argv[2] || process.env.PORT || 3000);
const host = process.argv[3];

const server = http.createServer((request, response) => {
  // `GET /spin?ms=N`: N ms of CPU work, during which this worker answers nothing (the
  // benchmark's head-of-line measure).
  if (request.url.startsWith('/spin')) spin(request.url);
  response.setHeader('content-type', 'application/json');
  response.end(JSON.stringify({
    runtime: 'http',
    pid: process.pid,
    cluster_worker: cluster.worker?.id ?? null,
    worker: process.env.HERDSMAN_WORKER_ID ?? null,
    port: server.address().port,
  }));
});

function spin(url) {
  const until = Date.now() + Number(new URL(url, 'http://localhost').searchParams.get('ms') || 1000);
  while (Date.now() < until);
}

server.listen(port, host, () => {
  console.log(`http ${process.pid} listening on ${JSON.stringify(server.address())}`);
});
