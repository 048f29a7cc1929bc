// `node socketio-client.js URL`: connects over websocket, asks the server which worker it is,
// prints the answer as JSON and exits (1 on an error or after 5 s).
'use strict';
const { io } = require('socket.io-client');

const socket = io(process.argv[2], { transports: ['websocket'], reconnection: false, timeout: 5000 });
const give_up = setTimeout(() => { console.error('no answer within 5 s'); process.exit(1); }, 5000);
socket.on('connect_error', (error) => { console.error(`connect error: ${error.message}`); process.exit(1); });
socket.on('connect', () => {
  socket.emit('whoami', (answer) => {
    console.log(JSON.stringify(answer));
    clearTimeout(give_up);
    socket.close();
  });
});
