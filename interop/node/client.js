'use strict';

// Node `ws` client peer: connects to scenario.url, runs scenario.steps and
// reports what it saw as JSON lines. See ../README.md for the protocol.

const WebSocket = require('ws');
const { report, readScenario, deflateOptions, Session, runSteps, watchdog } = require('./common');

function main() {
  const sc = readScenario();
  watchdog(sc.timeout || 60);
  const ws = new WebSocket(sc.url, sc.subprotocols || [], {
    perMessageDeflate: deflateOptions(sc.compression),
    maxPayload: 64 << 20,
    handshakeTimeout: 10000,
    headers: sc.headers || {},
  });
  let answered = '';
  ws.on('upgrade', (res) => {
    answered = res.headers['sec-websocket-extensions'] || '';
  });
  ws.on('unexpected-response', (req, res) => {
    report({ event: 'handshake_error', status: res.statusCode, error: `unexpected HTTP status ${res.statusCode}` });
    process.exit(1);
  });
  const s = new Session(ws);
  let opened = false;
  ws.on('error', (err) => {
    if (!opened) {
      report({ event: 'handshake_error', error: err.message });
      process.exit(1);
    }
  });
  ws.on('open', async () => {
    opened = true;
    report({ event: 'open', subprotocol: ws.protocol, extensions: answered });
    const missing = (sc.require || []).filter((name) => !extensionNames(answered).includes(name));
    if (missing.length > 0) {
      // What a client that requires an extension must do (RFC 6455 §7.4.1):
      // close with 1010 and list what is missing in the reason.
      report({ event: 'required_missing', missing });
      ws.close(1010, `missing extension: ${missing.join(', ')}`);
      const c = await s.closedPromise;
      report({ event: 'closed', code: c.code, reason: c.reason });
      process.exit(0);
    }
    await runSteps(s, sc.steps || [], true);
    process.exit(0);
  });
}

// extensionNames lists the extension names in a Sec-WebSocket-Extensions value.
function extensionNames(header) {
  return header
    .split(',')
    .map((e) => e.split(';')[0].trim())
    .filter((e) => e !== '');
}

main();
