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
    // The port it listens on, kept: after close() (a worker leaving) `address()` is null,
    // and the requests of its open connections are still answered.
    port: listening,
  }));
});

function spin(url) {
  const until = Date.now() + Number(new URL(url, 'http://localhost').searchParams.get('ms') || 1000);
  while (Date.now() < until);
}

let listening = null;
server.listen(port, host, () => {
  listening = server.address().port;
  console.log(`http ${process.pid} listening on ${JSON.stringify(server.address())}`);
});
