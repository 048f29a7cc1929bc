// A plain `node:http` server with one slow route: `GET /spin?ms=N` keeps its worker in CPU work
// for N ms (its event loop answers nothing meanwhile) and says so on stdout first. Every other
// request is answered at once. It shows what `--balance round-robin` is for: new connections go
// to the workers that are free, not to the one that is busy.
//
//   herdsman run --workers 2 --balance round-robin -- node examples/node/busy-app.js
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const server = http.createServer((request, response) => {
  const url = new URL(request.url, 'http://localhost');
  if (url.pathname === '/spin') {
    const ms = Number(url.searchParams.get('ms') || 1000);
    console.log(`worker ${cluster.worker?.id} spinning for ${ms} ms`);
    const until = Date.now() + ms;
    while (Date.now() < until);
  }
  response.setHeader('content-type', 'application/json');
  response.end(JSON.stringify({
    pid: process.pid,
    cluster_worker: cluster.worker?.id ?? null,
    worker: process.env.HERDSMAN_WORKER_ID ?? null,
  }));
});

server.listen(process.env.PORT || 3000);
