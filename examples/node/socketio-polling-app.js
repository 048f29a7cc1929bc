// A plain socket.io 4 server with its default transports, long-polling first, as its author
// runs it alone (`node socketio-polling-app.js`). Each poll is a new HTTP request, so every
// request of a session must reach the worker that holds it: under herdsman that takes
// `--sticky ip` (socket.io's docs call it sticky sessions); without it another worker
// answers 400 "Session ID unknown".
'use strict';
const http = require('node:http');
const { Server } = require('socket.io');

const server = http.createServer();
const io = new Server(server);
io.on('connection', (socket) => {
  socket.on('whoami', (answer) => answer({ pid: process.pid, worker: process.env.HERDSMAN_WORKER_ID }));
});
server.listen(process.env.PORT || 3000, () => console.log(`socket.io ${process.pid} listening`));
