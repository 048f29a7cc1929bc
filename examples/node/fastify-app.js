// A plain Fastify 5 app, as its author runs it alone (`node fastify-app.js`); under herdsman its
// listen() gets the cluster's socket through Node's cluster protocol. Fastify listens on every
// address `localhost` resolves to; one that is not the cluster's (::1 beside a cluster on
// 127.0.0.1) is bound once by herdsman and shared, as any address a worker asks for.
'use strict';
const cluster = require('node:cluster');
const fastify = require('fastify')();

fastify.get('/', async () => ({
  runtime: 'fastify',
  pid: process.pid,
  cluster_worker: cluster.worker?.id ?? null,
  worker: process.env.HERDSMAN_WORKER_ID ?? null,
}));

fastify.listen({ port: Number(process.env.PORT || 3000) }, (error) => {
  if (error) throw error;
  console.log(`fastify ${process.pid} listening`);
});
