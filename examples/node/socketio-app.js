// A plain socket.io 4 server, as its author runs it alone (`node socketio-app.js`). Over the
// websocket transport a connection stays on the worker that accepted it, so no sticky
// sessions are needed; under herdsman its listen() gets the cluster's socket.
'use strict';
const http = require('node:http');
const { Server } = require('socket.io');

const server = http.createServer();
const io = new Server(server, { transports: ['websocket'] });
io.on('connection', (socket) => {
  socket.on('whoami', (answer) => answer({ pid: process.pid, worker: process.env.HERDSMAN_WORKER_ID }));
});
server.listen(process.env.PORT || 3000, () => console.log(`socket.io ${process.pid} listening`));
