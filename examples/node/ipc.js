// A Node worker talking to the primary with Node's own IPC API, unchanged from Node's cluster
// module: process.send() reaches the primary (and `herdsman logs`), and what the primary sends
// (`herdsman send NAME SLOT|all JSON`) arrives as process.on('message').
//
//   herdsman run --ipc node --workers 2 --port 8000 -- node examples/node/ipc.js
//   herdsman send node all '{"greeting":"hello"}'
//   herdsman logs node        → worker 1 (pid …) message: {"echo":{"greeting":"hello"},"worker":"1"}
'use strict';
const http = require('node:http');

const worker = process.env.HERDSMAN_WORKER_ID;
let received = 0;

process.on('message', (message) => {
  received += 1;
  process.send({ echo: message, worker });
});

const server = http.createServer((request, response) => {
  response.setHeader('content-type', 'application/json');
  response.end(JSON.stringify({ worker, pid: process.pid, received }));
});

const inherited = process.env.LISTEN_FDS === '1' && Number(process.env.LISTEN_PID) === process.pid;
server.listen(inherited ? { fd: 3 } : { port: Number(process.env.PORT || 8000) }, () => {
  if (process.send) process.send({ online: worker });
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
