// Node's own cluster module as the primary, for bench/node.sh: forks WORKERS copies of an
// unmodified app through `cluster.setupPrimary({ exec })`, with the scheduling policy that
// $BENCH_SCHED names: `rr` (the primary accepts every connection and hands it to a worker,
// Node's default on Linux) or `none` (every worker accepts on the one shared socket). The
// workers bind what the app asks for (its $PORT). SIGTERM stops the workers, then the primary.
//
//   BENCH_SCHED=none PORT=8080 node bench/node-cluster-primary.js examples/node/http-app.js 2
'use strict';
const cluster = require('node:cluster');

const [app, workers = '2', ...args] = process.argv.slice(2);
const policies = { rr: cluster.SCHED_RR, none: cluster.SCHED_NONE };
const policy = policies[process.env.BENCH_SCHED];
if (!app || policy === undefined) {
  console.error('usage: BENCH_SCHED=rr|none node node-cluster-primary.js APP [WORKERS [ARGS…]]');
  process.exit(2);
}

// Read once, by the first setupPrimary(): it must be set before.
cluster.schedulingPolicy = policy;
cluster.setupPrimary({ exec: app, args });
for (let i = 0; i < Number(workers); i++) cluster.fork();

let stopping = false;
cluster.on('exit', (worker, code, signal) => {
  if (!stopping) console.error(`worker ${worker.id} exited (${signal || code})`);
});

process.on('SIGTERM', () => {
  stopping = true;
  for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
  process.exit(0);
});
