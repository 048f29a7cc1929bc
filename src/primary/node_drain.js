// herdsman's polite drain for unmodified Node servers. herdsman loads it into every Node worker
// it starts (`--require` in NODE_OPTIONS, written to the primary's runtime directory), and it
// changes one thing, only while the worker leaves at the primary's request (the cluster
// `disconnect` that reload, scale-down and stop send, which sets `exitedAfterDisconnect`):
// what an http or https server's close() does. Node's own close() then closes every idle
// keep-alive connection at once, racing the client's next request on it (which is lost), and
// keeps a busy connection open for as long as its client keeps sending, until the kill timeout.
// Here instead the server stops listening, every response from then on says
// `Connection: close` (the client's next request takes a new connection, which a serving worker
// gets), and a connection idle at a sweep, once a second, is closed. A server closed by the
// app itself (not leaving) closes as Node's does. docs/protocol.md, "Node's cluster messages".
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const tls = require('node:tls');

const SWEEP_MS = 1000;

function leaving() {
  return cluster.isWorker && cluster.worker?.exitedAfterDisconnect === true;
}

function drainOnLeave(Server, Base) {
  const close = Server.prototype.close;
  Server.prototype.close = function close_(...args) {
    if (!leaving()) return close.apply(this, args);
    this.prependListener('request', (request, response) => {
      response.shouldKeepAlive = false;
    });
    const sweep = setInterval(() => this.closeIdleConnections(), SWEEP_MS);
    sweep.unref();
    this.once('close', () => clearInterval(sweep));
    return Base.prototype.close.apply(this, args);
  };
}

drainOnLeave(http.Server, net.Server);
drainOnLeave(https.Server, tls.Server);
