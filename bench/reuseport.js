// Preloaded (`node --require bench/reuseport.js app.js`) by the benchmarks' "limit" setup: the
// app's own `listen()` binds its port with SO_REUSEPORT, so that N copies share the port with
// no primary at all. Needs Node 22.12/23.1 or later (bench/lib.sh `node_reuseport` checks).
'use strict';
const net = require('node:net');

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'object' && args[0] !== null) {
    args[0] = { ...args[0], reusePort: true };
  } else if (typeof args[0] === 'number' || typeof args[0] === 'string') {
    const [port, ...rest] = args;
    const host = typeof rest[0] === 'string' ? rest.shift() : undefined;
    args = [{ port: Number(port), host, reusePort: true }, ...rest.filter((a) => typeof a === 'function')];
  }
  return listen.apply(this, args);
};
