// A plain Koa 2 app, as its author runs it alone (`node koa-app.js`); under herdsman its
// listen() gets the cluster's socket through Node's cluster protocol.
'use strict';
const cluster = require('node:cluster');
const Koa = require('koa');

const app = new Koa();
app.use((context) => {
  context.body = {
    runtime: 'koa',
    pid: process.pid,
    cluster_worker: cluster.worker?.id ?? null,
    worker: process.env.HERDSMAN_WORKER_ID ?? null,
  };
});
app.listen(process.env.PORT || 3000, () => console.log(`koa ${process.pid} listening`));
