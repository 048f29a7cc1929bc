// The cluster program the tutorials teach (Node's cluster module, primary forks one worker per
// CPU, each worker listens on the port), unchanged. Run alone it is its own primary; under
// herdsman every worker goes straight to the worker branch (herdsman is the primary), so the
// primary branch never runs there.
//
//   herdsman run --workers 2 --port 8000 -- node examples/node/seed-cluster.js
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');

const PORT = process.env.PORT || 3000;

if (cluster.isPrimary) {
  const count = os.availableParallelism();
  console.log(`primary ${process.pid} is running, forking ${count} workers`);
  for (let i = 0; i < count; i++) {
    cluster.fork();
  }
  cluster.on('exit', (worker, code, signal) => {
    console.log(`worker ${worker.process.pid} died (${signal || code}), starting a new one`);
    cluster.fork();
  });
} else {
  http
    .createServer((request, response) => {
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify({
        runtime: 'seed',
        pid: process.pid,
        cluster_worker: cluster.worker.id,
        worker: process.env.HERDSMAN_WORKER_ID ?? null,
      }));
    })
    .listen(PORT);
  console.log(`worker ${process.pid} started`);
}
