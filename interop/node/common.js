'use strict';

// Shared parts of the Node `ws` peer: scenario parsing, deterministic
// payloads, the step runner and the JSON-lines report. The protocol is
// described in ../README.md; the Python peer implements the same one.

const crypto = require('crypto');
const fs = require('fs');

// report writes one event as a JSON line on stdout.
function report(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

// readScenario takes the scenario from argv[2] or, when absent, from stdin.
function readScenario() {
  const text = process.argv.length > 2 ? process.argv[2] : fs.readFileSync(0, 'utf8');
  try {
    return JSON.parse(text);
  } catch (err) {
    process.stderr.write(`peer: scenario is not valid JSON (${err.message}); pass it as the first argument or on stdin\n`);
    process.exit(2);
  }
}

// The text payload repeats TEXT_UNIT (ASCII plus a 3-byte '€') so that
// fragmentation and UTF-8 validation across frames are exercised.
const TEXT_UNIT = Buffer.from('ebb-ws-\u20ac-', 'utf8');

// payload returns the deterministic message of the given type and size in
// bytes; the Go tests and the Python peer compute the same bytes.
function payload(type, size) {
  const buf = Buffer.alloc(size);
  if (type === 'binary') {
    for (let i = 0; i < size; i++) buf[i] = i % 251;
    return buf;
  }
  for (let i = 0; i < size; i++) buf[i] = TEXT_UNIT[i % TEXT_UNIT.length];
  // Do not end inside the 3-byte '€': replace a cut sequence with dots.
  if (size >= 1 && buf[size - 1] === 0xe2) buf[size - 1] = 0x2e;
  if (size >= 2 && buf[size - 2] === 0xe2 && buf[size - 1] === 0x82) buf.fill(0x2e, size - 2);
  return buf;
}

function sha256(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

// deflateOptions maps the scenario's compression object to ws options.
// null or undefined means compression off.
function deflateOptions(c) {
  if (c === null || c === undefined) return false;
  const opts = { threshold: 0 };
  if (c.server_no_context_takeover) opts.serverNoContextTakeover = true;
  if (c.client_no_context_takeover) opts.clientNoContextTakeover = true;
  if (c.server_max_window_bits) opts.serverMaxWindowBits = c.server_max_window_bits;
  if (c.client_max_window_bits !== undefined && c.client_max_window_bits !== null) {
    opts.clientMaxWindowBits = c.client_max_window_bits;
  }
  return opts;
}

// Session wraps an open ws WebSocket: it queues incoming messages so that
// steps can receive them in order, and remembers how the connection ended.
class Session {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiters = [];
    this.closed = null;
    this.closedPromise = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason.toString('utf8') };
        for (const w of this.waiters.splice(0)) w(null);
        resolve(this.closed);
      });
    });
    ws.on('message', (data, isBinary) => {
      const msg = { type: isBinary ? 'binary' : 'text', data };
      const w = this.waiters.shift();
      if (w) w(msg);
      else this.queue.push(msg);
    });
    ws.on('error', (err) => report({ event: 'error', error: err.message }));
  }

  // recv resolves to the next message, or null once the connection closed.
  recv() {
    if (this.queue.length > 0) return Promise.resolve(this.queue.shift());
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  // send resolves to true once data is written, or to false when the
  // connection started closing first (a Close frame already received or
  // sent ends the data flow; that is not an error of this peer).
  send(data, opts) {
    const WebSocket = this.ws.constructor;
    if (this.ws.readyState !== WebSocket.OPEN) return Promise.resolve(false);
    return new Promise((resolve, reject) => {
      this.ws.send(data, opts, (err) => {
        if (!err) resolve(true);
        else if (this.ws.readyState !== WebSocket.OPEN) resolve(false);
        else reject(err);
      });
    });
  }
}

function reportMessage(msg) {
  report({ event: 'message', type: msg.type, size: msg.data.length, sha256: sha256(msg.data) });
}

// rawClose writes a Close frame straight to the socket, bypassing ws's
// check of the code, so that invalid codes can be sent on purpose.
function rawClose(ws, code, reason, mask) {
  const body = Buffer.alloc(2 + Buffer.byteLength(reason || ''));
  body.writeUInt16BE(code, 0);
  if (reason) body.write(reason, 2);
  const head = Buffer.from([0x88, (mask ? 0x80 : 0) | body.length]);
  let frame;
  if (mask) {
    const key = crypto.randomBytes(4);
    const masked = Buffer.from(body);
    for (let i = 0; i < masked.length; i++) masked[i] ^= key[i % 4];
    frame = Buffer.concat([head, key, masked]);
  } else {
    frame = Buffer.concat([head, body]);
  }
  ws._socket.write(frame);
}

// runSteps executes the scenario's steps on an open session. It stops early
// when the connection closes and then waits for the close to complete.
async function runSteps(s, steps, isClient) {
  try {
    await execSteps(s, steps, isClient);
  } catch (err) {
    report({ event: 'error', error: `peer: ${err.message}` });
    s.ws.terminate();
  }
  const c = await s.closedPromise;
  report({ event: 'closed', code: c.code, reason: c.reason });
}

async function execSteps(s, steps, isClient) {
  for (const step of steps) {
    if (s.closed) break;
    switch (step.op) {
      case 'send': {
        const data = payload(step.type, step.size);
        const binary = step.type === 'binary';
        const frag = step.fragment || 0;
        if (frag <= 0 || data.length <= frag) {
          await s.send(data, { binary });
        } else {
          for (let off = 0; off < data.length; off += frag) {
            const end = Math.min(off + frag, data.length);
            await s.send(data.subarray(off, end), { binary, fin: end === data.length });
          }
        }
        break;
      }
      case 'expect': {
        const msg = await s.recv();
        if (msg) reportMessage(msg);
        break;
      }
      case 'echo': {
        let n = 0;
        for (;;) {
          if (step.count && n >= step.count) break;
          const msg = await s.recv();
          if (!msg) break;
          reportMessage(msg);
          if (!(await s.send(msg.data, { binary: msg.type === 'binary' }))) break;
          n++;
        }
        break;
      }
      case 'ping': {
        const pong = new Promise((resolve) => s.ws.once('pong', resolve));
        s.ws.ping(Buffer.from(step.data || ''));
        const data = await Promise.race([pong, s.closedPromise.then(() => null)]);
        if (data) report({ event: 'pong', data: data.toString('utf8') });
        break;
      }
      case 'close':
        s.ws.close(step.code, step.reason || '');
        await s.closedPromise;
        break;
      case 'raw_close':
        rawClose(s.ws, step.code, step.reason, isClient);
        await s.closedPromise;
        break;
      case 'wait_close':
        for (;;) {
          const msg = await s.recv();
          if (!msg) break;
          reportMessage(msg);
        }
        break;
      default:
        report({ event: 'error', error: `unknown step op ${JSON.stringify(step.op)}` });
        s.ws.terminate();
    }
  }
  // Drain what is left so that a peer-initiated close completes.
  if (!s.closed) {
    for (;;) {
      const msg = await s.recv();
      if (!msg) break;
      reportMessage(msg);
    }
  }
}

// watchdog ends the process if a scenario hangs, so a broken peer cannot
// stall the Go tests beyond their own timeouts.
function watchdog(seconds) {
  const t = setTimeout(() => {
    report({ event: 'error', error: `peer: scenario did not finish within ${seconds}s` });
    process.exit(3);
  }, seconds * 1000);
  t.unref();
}

module.exports = { report, readScenario, payload, sha256, deflateOptions, Session, runSteps, watchdog };
