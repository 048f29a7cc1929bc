// A plain Express 5 app, exactly as its author runs it alone (`node express-app.js`): not one
// line of it knows herdsman. Under herdsman, Node's own cluster protocol hands each worker the
// cluster's socket when `app.listen()` asks for it, as under Node's cluster module or PM2.
//
//   cd examples/node && npm ci
//   herdsman run --workers 2 --port 8000 -- node examples/node/express-app.js
//   curl localhost:8000/   → {"runtime":"express","pid":4121,"cluster_worker":1,"worker":"1"}
'use strict';
const cluster = require('node:cluster');
const express = require('express');

const app = express();

app.get('/', (request, response) => {
  response.json({
    runtime: 'express',
    pid: process.pid,
    // Node's own worker id (null when not run as a cluster worker) and herdsman's slot.
    cluster_worker: cluster.worker?.id ?? null,
    worker: process.env.HERDSMAN_WORKER_ID ?? null,
  });
});

// N ms of CPU work, during which this worker answers nothing (the benchmark's head-of-line
// measure).
app.get('/spin', (request, response) => {
  const until = Date.now() + Number(request.query.ms || 1000);
  while (Date.now() < until);
  response.json({ pid: process.pid, spun_ms: Number(request.query.ms || 1000) });
});

const port = process.env.PORT || 3000;
app.listen(port, () => console.log(`express ${process.pid} listening on ${port}`));
