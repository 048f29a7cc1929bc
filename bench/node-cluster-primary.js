// Node's own cluster module as the primary, for the benchmarks: forks WORKERS copies of an
// unmodified app through `cluster.setupPrimary({ exec })`, with the scheduling policy that
// $BENCH_SCHED names: `rr` (the primary accepts every connection and hands it to a worker,
// Node's default on Linux) or `none` (every worker accepts on the one shared socket). The
// workers bind what the app asks for (its $PORT).
//
// What a Node cluster primary is usually written to do, and nothing more: a worker that dies
// is forked again at once; SIGUSR2 is a rolling restart, one worker at a time (fork the new
// one, wait for its `listening`, then `disconnect()` the old one, which closes its server and
// exits once its connections are done); SIGTERM stops the workers, then the primary.
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
// Workers that a rolling restart retires: their exit is expected, not a crash to repair.
const retiring = new Set();
cluster.on('exit', (worker, code, signal) => {
  if (stopping || retiring.delete(worker.id)) return;
  console.error(`worker ${worker.id} (pid ${worker.process.pid}) exited (${signal || code}); forking another`);
  cluster.fork();
});

let restarting = false;
async function rollingRestart() {
  if (restarting) return;
  restarting = true;
  for (const old of Object.values(cluster.workers)) {
    const fresh = cluster.fork();
    await new Promise((resolve) => {
      fresh.once('listening', resolve);
      fresh.once('exit', resolve);
    });
    retiring.add(old.id);
    old.disconnect();
    await new Promise((resolve) => (old.isDead() ? resolve() : old.once('exit', resolve)));
  }
  restarting = false;
  console.error('rolling restart done');
}
process.on('SIGUSR2', () => {
  rollingRestart().catch((error) => console.error(`rolling restart failed: ${error}`));
});

process.on('SIGTERM', () => {
  stopping = true;
  for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
  process.exit(0);
});
