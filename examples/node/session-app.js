// Logins that every worker knows: express-session with connect-redis on node-redis' default
// client (RESP3), so a session written by one worker is read by the next request wherever it
// lands. The same code works against a real Redis.
//
//   cd examples/node && npm ci
//   herdsman run --workers 2 --port 8000 -- node examples/node/session-app.js
//   curl -c jar -X POST 'localhost:8000/login?user=alice'
//   curl -b jar localhost:8000/me    → {"user":"alice","worker":"2","pid":4122}
'use strict';
const express = require('express');
const session = require('express-session');
const { RedisStore } = require('connect-redis');
const { createClient } = require('redis');

// node-redis reads herdsman's `unix:///…/state.sock` URL as it is.
const client = createClient({ url: process.env.REDIS_URL || 'redis://127.0.0.1:6379/0' });
client.on('error', (error) => console.error(`redis error: ${error.message}`));

const app = express();
app.use(
  session({
    store: new RedisStore({ client, prefix: 'session:' }),
    secret: process.env.SESSION_SECRET || 'herdsman example',
    resave: false,
    saveUninitialized: false,
  }),
);

function answer(response, fields) {
  response.json({ ...fields, worker: process.env.HERDSMAN_WORKER_ID, pid: process.pid });
}

app.post('/login', (request, response) => {
  request.session.user = String(request.query.user);
  answer(response, { user: request.session.user });
});

app.get('/me', (request, response) => {
  answer(response, { user: request.session.user ?? null });
});

// As connect-redis' README does: connect in the background; node-redis queues commands until
// the connection is up, so the server may listen at once.
client.connect().catch((error) => console.error(`redis connect failed: ${error.message}`));
// Ready once it serves: `process.send('ready')` is PM2's `wait_ready` signal, which herdsman
// takes too (a worker slow to start is not sent connections before it listens).
const server = app.listen(Number(process.env.PORT || 8000), () => process.send?.('ready'));

// Stopped by SIGTERM or by Node's cluster disconnect: the store connection would keep the
// process alive, so close it too.
function stop() {
  server.close(() => client.quit().finally(() => process.exit(0)));
}
process.on('SIGTERM', stop);
process.on('disconnect', stop);
