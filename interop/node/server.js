'use strict';

// Node `ws` server peer: listens on 127.0.0.1:scenario.port (0 = any free
// port), reports {"event":"listening","port":N}, serves one connection by
// running scenario.steps (default: echo until the client closes) and exits.
// See ../README.md for the protocol.

const { WebSocketServer } = require('ws');
const { report, readScenario, deflateOptions, Session, runSteps, watchdog } = require('./common');

function main() {
  const sc = readScenario();
  watchdog(sc.timeout || 60);
  const supported = sc.subprotocols || [];
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: sc.port || 0,
    perMessageDeflate: deflateOptions(sc.compression),
    maxPayload: 64 << 20,
    handleProtocols: (offered) => {
      for (const p of offered) if (supported.includes(p)) return p;
      return false;
    },
  });
  let answered = '';
  wss.on('headers', (headers) => {
    for (const h of headers) {
      const m = /^sec-websocket-extensions:\s*(.*)$/i.exec(h);
      if (m) answered = m[1];
    }
  });
  wss.on('listening', () => report({ event: 'listening', port: wss.address().port }));
  let served = false;
  wss.on('connection', async (ws, req) => {
    if (served) {
      ws.close(1013, 'this peer serves one connection per run');
      return;
    }
    served = true;
    report({
      event: 'open',
      subprotocol: ws.protocol,
      extensions: answered,
      offered: req.headers['sec-websocket-extensions'] || '',
    });
    const s = new Session(ws);
    await runSteps(s, sc.steps || [{ op: 'echo' }], false);
    wss.close();
    process.exit(0);
  });
}

main();
