// A job added by one worker and processed by another, through BullMQ on herdsman's store.
// Each worker runs a BullMQ Worker on a queue of its own (`jobs-for-N`) and serves HTTP beside
// it: `GET /job?a=6&b=7` adds a job to the *other* worker's queue and waits for it to finish
// (QueueEvents reads BullMQ's event stream), so the answer tells who added the job and who
// processed it. The same code works against a real Redis.
//
//   cd examples/node && npm ci
//   herdsman run --workers 2 --port 8000 -- node examples/node/bullmq-app.js
//   curl 'localhost:8000/job?a=6&b=7'  → {"product":42,"added_by":"1","processed_by":"2",…}
'use strict';
const http = require('node:http');
const IORedis = require('ioredis');
const { Queue, QueueEvents, Worker } = require('bullmq');

// herdsman hands workers `unix:///…/state.sock`; ioredis takes a socket as a plain path.
// BullMQ wants `maxRetriesPerRequest: null` on the connection its Worker blocks on.
const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379/0';
const connection = new IORedis(url.replace(/^unix:\/\//, ''), { maxRetriesPerRequest: null });

const me = process.env.HERDSMAN_WORKER_ID || '1';
const other = me === '1' ? '2' : '1';

const worker = new Worker(
  `jobs-for-${me}`,
  async (job) => ({ product: job.data.a * job.data.b, processed_by: me }),
  { connection },
);
const queue = new Queue(`jobs-for-${other}`, { connection });
for (const [name, emitter] of [['worker', worker], ['queue', queue]]) {
  emitter.on('error', (error) => console.error(`bullmq ${name} error: ${error.message}`));
}

// QueueEvents reads the event stream from `$` (what comes next) once it has connected, a moment
// after `waitUntilReady()` resolves: a job that finished in between would never be heard of.
// Reading on from the newest event there was at start misses none.
const listening = (async () => {
  await queue.waitUntilReady();
  const [newest] = await connection.xrevrange(queue.keys.events, '+', '-', 'COUNT', 1);
  const events = new QueueEvents(`jobs-for-${other}`, {
    connection,
    lastEventId: newest ? newest[0] : '0-0',
  });
  events.on('error', (error) => console.error(`bullmq events error: ${error.message}`));
  return events;
})();

function answer(response, status, fields) {
  const body = JSON.stringify({ ...fields, worker: me, pid: process.pid });
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
  });
  response.end(body);
}

const server = http.createServer(async (request, response) => {
  const query = new URL(request.url, 'http://localhost').searchParams;
  try {
    const events = await listening;
    const job = await queue.add('multiply', { a: Number(query.get('a')), b: Number(query.get('b')) });
    const result = await job.waitUntilFinished(events, 15000);
    answer(response, 200, { ...result, added_by: me, job: job.id });
  } catch (error) {
    console.error(`job failed: ${error.message}`);
    answer(response, 500, { error: error.message });
  }
});
// Ready once it serves: `process.send('ready')` is PM2's `wait_ready` signal, which herdsman
// takes too (a worker slow to start is not sent connections before it listens).
server.listen(Number(process.env.PORT || 8000), () => process.send?.('ready'));

// Stopped by SIGTERM or by Node's cluster disconnect: BullMQ's connections would keep the
// process alive, so close them too.
function stop() {
  server.close();
  Promise.all([worker.close(), queue.close(), listening.then((events) => events.close())])
    .then(() => connection.quit())
    .finally(() => process.exit(0));
}
process.on('SIGTERM', stop);
process.on('disconnect', stop);
