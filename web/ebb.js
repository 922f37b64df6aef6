// ebb.js: ebb's reconnecting WebSocket client for browsers, a plain ES
// module with no build step. It follows the same rules as the Go package
// github.com/ebb-ws/ebb/reconnect:
//
//   - reconnect only when the close code's retry class says that can help
//     (the table in closecodes.gen.js is generated from Go's closecode);
//   - wait min(cap, base·2^n) before attempt n (1 s base, 30 s cap), with
//     "equal jitter" on every delay, the first and those at the cap too;
//   - treat a server's "retry-after=<seconds>" in the close reason as a floor;
//   - reset the attempt counter only after a connection stayed up for a
//     stable period, so a flapping server cannot reset it;
//   - report every state change; queue messages sent while down, up to a
//     bound, and refuse the rest with a QueueFullError.
//
// A browser cannot see the HTTP answer of a refused handshake (it reports
// 1006), and it cannot send 1010: when the server does not accept an
// extension the application requires, the client closes with 1000, names
// the missing extension in the reason, and stops with a
// MandatoryExtensionError instead of retrying.
//
//   import { Client } from "/ebb.js";
//   const client = new Client("/ws", {
//     require: ["permessage-deflate"],
//     onMessage: (data) => console.log(data),
//     onEvent: (e) => console.log(describe(e)),
//   });
//   client.send("hello"); // sent now, or queued until the link is up

import {
  CODES,
  MAX_REASON_BYTES,
  MAX_RETRY_HINT_SECONDS,
  RANGES,
  RETRY_CLASSES,
  RETRY_HINT_KEY,
} from "./closecodes.gen.js";

export { CODES, RANGES, RETRY_CLASSES };

/** Defaults, the same as the Go package's (durations in milliseconds). */
export const DEFAULTS = Object.freeze({
  base: 1000,
  cap: 30000,
  jitter: 0.5,
  stablePeriod: 10000,
  queueMessages: 256,
  queueBytes: 1 << 20,
});

/** Client states, entered in the order connecting → open → closed → waiting → connecting …, ending in stopped. */
export const State = Object.freeze({
  CONNECTING: "connecting",
  OPEN: "open",
  CLOSED: "closed",
  WAITING: "waiting",
  STOPPED: "stopped",
});

const MANDATORY_EXTENSION = 1010;
const INTERNAL_ERROR = 1011;
const ABNORMAL_CLOSURE = 1006;
const TLS_HANDSHAKE = 1015;
const OPEN = 1; // WebSocket.OPEN, also when a test injects its own class

/** lookup returns the table entry for a close code: its own, or its range's. */
export function lookup(code) {
  const own = CODES[code];
  if (own) return own;
  for (const r of RANGES) {
    if (code >= r.lo && code <= r.hi) return { ...r, code };
  }
  return { code, name: "Invalid", retryClass: "invalid", retries: false, onWire: false, description: "Not a 16-bit close code.", fix: "Use a code from 1000–4999." };
}

/**
 * parseRetryHint reads "retry-after=<seconds>" from a close reason, as Go's
 * closecode.ParseRetryHint does, and returns milliseconds, or null when the
 * reason has no valid hint (negative, malformed or over the trusted maximum).
 */
export function parseRetryHint(reason) {
  if (typeof reason !== "string") return null;
  const i = reason.lastIndexOf(RETRY_HINT_KEY);
  if (i < 0) return null;
  const m = /^[0-9.]+/.exec(reason.slice(i + RETRY_HINT_KEY.length));
  if (!m) return null;
  const secs = Number(m[0]);
  if (!Number.isFinite(secs) || secs < 0 || secs > MAX_RETRY_HINT_SECONDS) return null;
  return secs * 1000;
}

const encoder = new TextEncoder();

/** truncateReason shortens s to at most n UTF-8 bytes without splitting a character. */
export function truncateReason(s, n = MAX_REASON_BYTES) {
  if (encoder.encode(s).length <= n) return s;
  let out = "";
  let used = 0;
  for (const ch of s) {
    const len = encoder.encode(ch).length;
    if (used + len > n) break;
    out += ch;
    used += len;
  }
  return out;
}

/**
 * Backoff computes the delay before attempt n (from 0): the nominal delay
 * min(cap, base·2^n) with "equal jitter", uniform in [d·(1−jitter), d).
 * Equal jitter spreads a crowd over half of each delay, at the cap too, never
 * exceeds the nominal delay, and never sends a client back sooner than half
 * of it. A server hint is a floor: the window moves up to start at the hint
 * and keeps its width, so clients given the same hint still spread out.
 */
export class Backoff {
  constructor({ base = DEFAULTS.base, cap = DEFAULTS.cap, jitter = DEFAULTS.jitter } = {}) {
    this.base = base > 0 ? base : DEFAULTS.base;
    this.cap = cap > 0 ? cap : DEFAULTS.cap;
    this.jitter = jitter > 0 ? Math.min(jitter, 1) : DEFAULTS.jitter;
  }

  /** nominal returns min(cap, base·2^n) in milliseconds. */
  nominal(n) {
    if (this.base >= this.cap) return this.cap;
    return Math.min(this.cap, this.base * 2 ** Math.max(0, n));
  }

  /** window returns [lo, hi): the range the delay before attempt n falls in under a hint floor. */
  window(n, floor = 0) {
    const d = this.nominal(n);
    const spread = this.jitter * d;
    const lo = Math.max(d - spread, floor || 0);
    return [lo, lo + spread];
  }

  /** delay draws the delay before attempt n, never below floor; random returns [0, 1). */
  delay(n, floor = 0, random = Math.random) {
    let u = random();
    if (!(u >= 0)) u = 0;
    if (u >= 1) u = 1 - Number.EPSILON;
    const [lo, hi] = this.window(n, floor);
    return lo + u * (hi - lo);
  }
}

/**
 * Policy decides whether to reconnect after a close, from the code's retry
 * class: backoff and soon classes retry; done (1000) and depends (1005)
 * retry only when persistent; application codes (3000–4999 without an entry
 * of their own) follow the application rule, and stop without one; the rest
 * stop. A retry-after= hint in the reason of a retried close becomes hint.
 */
export class Policy {
  constructor({
    base, cap, jitter,
    stablePeriod = DEFAULTS.stablePeriod,
    maxAttempts = 0,
    maxElapsed = 0,
    persistent = false,
    application = null,
  } = {}) {
    this.backoff = new Backoff({ base, cap, jitter });
    this.stablePeriod = stablePeriod > 0 ? stablePeriod : DEFAULTS.stablePeriod;
    this.maxAttempts = maxAttempts > 0 ? maxAttempts : 0;
    this.maxElapsed = maxElapsed > 0 ? maxElapsed : 0;
    this.persistent = Boolean(persistent);
    this.application = typeof application === "function" ? application : null;
  }

  /** decide returns {retry, retryClass, code, reason, hint, why}. */
  decide(code, reason = "") {
    const info = lookup(code);
    const cls = info.retryClass;
    const name = `${code} ${info.name}`;
    const d = { retry: false, retryClass: cls, code, reason, hint: 0, why: "" };
    switch (cls) {
      case "backoff":
      case "soon":
        d.retry = true;
        d.why = `${name}: ${RETRY_CLASSES[cls].text}`;
        break;
      case "done":
      case "depends":
        d.retry = this.persistent;
        d.why = this.persistent
          ? `${name}: the peer ended the link, and the link is persistent: retry with backoff`
          : `${name}: the peer ended the link on purpose; not reconnecting (set persistent to keep the link up)`;
        break;
      case "application":
        if (!this.application) {
          d.why = `${name}: the application decides, and no application rule is set; not reconnecting`;
        } else {
          d.retry = Boolean(this.application(code, reason));
          d.why = `${name}: the application rule says ${d.retry ? "retry" : "stop"}`;
        }
        break;
      case "permanent":
        d.why = `${name} is permanent: retrying repeats the failure; ${info.fix}`;
        break;
      case "until-config-change":
        d.why = `${name} is permanent until the configuration changes: ${info.fix}`;
        break;
      default:
        d.why = `${name} is not a valid close code: the peer broke the protocol; not reconnecting`;
    }
    if (d.retry) {
      const hint = parseRetryHint(reason);
      if (hint !== null) {
        d.hint = hint;
        d.why += `, not before the server's hint of ${hint / 1000}s`;
      }
    }
    return d;
  }
}

/** QueueFullError: the link is down and the message does not fit in the queue; it was not queued. */
export class QueueFullError extends Error {
  constructor(queued, bytes, maxMessages, maxBytes, size) {
    super(`ebb: the link is down and the queue of unsent messages is full (${queued} messages, ${bytes} bytes queued; bounds ${maxMessages} messages, ${maxBytes} bytes; message of ${size} bytes): wait for the open event, slow down, or raise queueMessages/queueBytes`);
    this.name = "QueueFullError";
  }
}

/** ClientClosedError is the final error of a client the application closed. */
export class ClientClosedError extends Error {
  constructor() {
    super("ebb: client closed by the application");
    this.name = "ClientClosedError";
  }
}

/**
 * MandatoryExtensionError: the server did not accept an extension the
 * application requires. It is of the 1010 class: retrying cannot help until
 * the server's (or a proxy's) configuration changes.
 */
export class MandatoryExtensionError extends Error {
  constructor(required, answered, missing) {
    super(`ebb: the server did not accept the required extension${missing.length > 1 ? "s" : ""} ${missing.join(", ")} (Sec-WebSocket-Extensions answered: ${answered ? JSON.stringify(answered) : "nothing"}): enable ${missing.length > 1 ? "them" : "it"} on the server and any proxy in between, or stop requiring ${missing.length > 1 ? "them" : "it"}`);
    this.name = "MandatoryExtensionError";
    this.code = MANDATORY_EXTENSION;
    this.required = required;
    this.answered = answered;
    this.missing = missing;
  }

  /** closeReason is the reason the client closes with, within the 123-byte limit. */
  get closeReason() {
    return truncateReason(`missing required extension: ${this.missing.join(", ")}`);
  }
}

/**
 * GaveUpError says why a client stopped reconnecting: the verdict on the last
 * close (decision) and, when a cap stopped it, which (limit is "maxAttempts"
 * or "maxElapsed"). cause is the error behind the last close, if any.
 */
export class GaveUpError extends Error {
  constructor(decision, limit, attempts, elapsed) {
    let msg = "ebb: gave up";
    if (attempts > 0) msg += ` after ${attempts} attempts in ${Math.round(elapsed)}ms`;
    if (limit === "maxAttempts") msg += ": reached maxAttempts without a stable connection; last:";
    else if (limit === "maxElapsed") msg += ": the next attempt would start past maxElapsed; last:";
    else msg += ":";
    msg += " " + decision.why;
    if (decision.error) msg += ` (${decision.error.message})`;
    super(msg, decision.error ? { cause: decision.error } : undefined);
    this.name = "GaveUpError";
    this.decision = decision;
    this.limit = limit;
    this.attempts = attempts;
    this.elapsed = elapsed;
  }
}

/**
 * Schedule applies a Policy over the life of one link: counts attempts,
 * resets the count only after a connection stayed up for the stable period,
 * enforces maxAttempts and maxElapsed, and draws each delay. Time (ms) is
 * passed in, so it is deterministic under test.
 */
export class Schedule {
  #policy;
  #random;
  #attempt = 0;
  #since;
  #upSince = 0;
  #up = false;

  constructor(policy, random = Math.random, now = Date.now()) {
    this.#policy = policy;
    this.#random = random;
    this.#since = now;
  }

  /** attempts is the number of reconnect attempts since the link was last stable. */
  get attempts() {
    return this.#attempt;
  }

  /** opened records that a connection opened at now. */
  opened(now) {
    this.#up = true;
    this.#upSince = now;
  }

  /**
   * next records that the connection (or attempt) ended at now with the
   * given decision and returns {wait: {attempt, delay, nominal, hinted, decision}}
   * or {error: GaveUpError}.
   */
  next(now, decision) {
    if (this.#up) {
      this.#up = false;
      if (now - this.#upSince >= this.#policy.stablePeriod) {
        this.#attempt = 0;
        this.#since = now;
      }
    }
    const gaveUp = (limit) => ({ error: new GaveUpError(decision, limit, this.#attempt, now - this.#since) });
    if (!decision.retry) return gaveUp(null);
    const p = this.#policy;
    if (p.maxAttempts > 0 && this.#attempt >= p.maxAttempts) return gaveUp("maxAttempts");
    const n = this.#attempt;
    const delay = p.backoff.delay(n, decision.hint, this.#random);
    if (p.maxElapsed > 0 && now + delay - this.#since > p.maxElapsed) return gaveUp("maxElapsed");
    const [plainLo] = p.backoff.window(n, 0);
    this.#attempt++;
    return {
      wait: { attempt: this.#attempt, delay, nominal: p.backoff.nominal(n), hinted: decision.hint > plainLo, decision },
    };
  }
}

/** missingExtensions returns the required extension names absent from a Sec-WebSocket-Extensions value. */
export function missingExtensions(required, answered) {
  const accepted = new Set(
    String(answered || "")
      .split(",")
      .map((ext) => ext.split(";")[0].trim().toLowerCase())
      .filter(Boolean),
  );
  return required.filter((name) => !accepted.has(String(name).toLowerCase()));
}

/** describe renders an event in one line for people, like the Go Event.String. */
export function describe(e) {
  let s = e.state;
  switch (e.state) {
    case State.CONNECTING:
    case State.OPEN:
      if (e.attempt > 0) s += ` (attempt ${e.attempt})`;
      break;
    case State.CLOSED:
      if (e.code) s += `: ${e.code} ${lookup(e.code).name}`;
      if (e.reason) s += ` (${e.reason})`;
      break;
    case State.WAITING:
      s += ` ${(e.delay / 1000).toFixed(3)}s before attempt ${e.attempt}`;
      if (e.hinted) s += ` (server hint ${e.decision.hint / 1000}s)`;
      break;
    case State.STOPPED:
      if (e.error) s += `: ${e.error.message}`;
      if (e.unsent > 0) s += ` (${e.unsent} messages unsent)`;
      break;
  }
  return s;
}

function byteLength(data) {
  if (typeof data === "string") return encoder.encode(data).length;
  if (data && typeof data.byteLength === "number") return data.byteLength;
  if (data && typeof data.size === "number") return data.size;
  return 0;
}

function resolveURL(url) {
  const base = globalThis.location ? globalThis.location.href : undefined;
  let u;
  try {
    u = new URL(url, base);
  } catch (err) {
    throw new TypeError(`ebb: cannot parse URL ${JSON.stringify(url)}: want ws://, wss:// or a path on this page's host`, { cause: err });
  }
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") {
    throw new TypeError(`ebb: URL ${JSON.stringify(url)} has scheme ${u.protocol}: want ws:// or wss://`);
  }
  u.hash = "";
  return u.href;
}

/**
 * Client is a WebSocket link that reconnects by its Policy. It starts
 * connecting when constructed.
 *
 * Options (all optional; durations in milliseconds):
 *   protocols       subprotocols to offer
 *   require         extension names the link cannot work without, e.g. ["permessage-deflate"]
 *   base, cap, jitter, stablePeriod, maxAttempts, maxElapsed, persistent,
 *   application(code, reason) → boolean   the Policy (see Policy)
 *   queueMessages, queueBytes   bounds of the queue used while down (0: defaults; negative: no queue)
 *   binaryType      "blob" (default) or "arraybuffer"
 *   onMessage(data, event)     every message, from every connection, in order
 *   onEvent(event)  every state change, synchronously; exceptions it throws are re-thrown asynchronously
 *   onConnect(ws)   runs on each new connection before the queue is flushed (re-subscribe here);
 *                   may return a Promise; a throw or rejection closes the connection and counts as a
 *                   failed attempt (retried with backoff)
 *   WebSocket, random, now, setTimeout, clearTimeout   injectable for tests
 *
 * An event is {state, time, attempt, code, reason, remote, delay, hinted,
 * decision, error, unsent}; which fields are set depends on state, as in the
 * Go package's Event.
 */
export class Client {
  #url;
  #protocols;
  #require;
  #policy;
  #schedule;
  #maxMessages;
  #maxBytes;
  #binaryType;
  #onMessage;
  #onEvent;
  #onConnect;
  #WS;
  #now;
  #setTimeout;
  #clearTimeout;

  #ws = null;
  #direct = false;
  #queue = [];
  #queueBytes = 0;
  #attempt = 0;
  #timer = null;
  #state = null;
  #stopped = false;
  #error = null;
  #openedOnce = false;
  #ready = [];

  constructor(url, options = {}) {
    this.#url = resolveURL(url);
    const o = options;
    this.#protocols = o.protocols || [];
    this.#require = [...(o.require || [])];
    this.#policy = new Policy(o);
    this.#binaryType = o.binaryType || "blob";
    this.#onMessage = o.onMessage || null;
    this.#onEvent = o.onEvent || null;
    this.#onConnect = o.onConnect || null;
    this.#WS = o.WebSocket || globalThis.WebSocket;
    this.#now = o.now || (() => Date.now());
    this.#setTimeout = o.setTimeout || ((f, ms) => globalThis.setTimeout(f, ms));
    this.#clearTimeout = o.clearTimeout || ((t) => globalThis.clearTimeout(t));
    let maxMessages = o.queueMessages || DEFAULTS.queueMessages;
    let maxBytes = o.queueBytes || DEFAULTS.queueBytes;
    if (maxMessages < 0 || maxBytes < 0) maxMessages = maxBytes = 0;
    this.#maxMessages = maxMessages;
    this.#maxBytes = maxBytes;
    this.#schedule = new Schedule(this.#policy, o.random || Math.random, this.#now());
    this.#connect();
  }

  /** state is the current state (see State). */
  get state() {
    return this.#state;
  }

  /** error is the reason the client stopped, or null while it runs. */
  get error() {
    return this.#error;
  }

  /** ready resolves once a connection has opened, or rejects with the final error if the client stopped first. */
  ready() {
    if (this.#openedOnce) return Promise.resolve(this);
    if (this.#stopped) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => this.#ready.push({ resolve, reject }));
  }

  /** unsent returns the queued messages: waiting for a connection, or never sent once stopped. */
  unsent() {
    return this.#queue.map((m) => m.data);
  }

  /**
   * send sends data on the open connection, or queues it while the link is
   * down (flushed in order after the next connection opens). It throws a
   * QueueFullError when the message does not fit, and the final error once
   * the client has stopped. As with any WebSocket, data handed to an open
   * connection is lost if the connection ends before the server reads it.
   */
  send(data) {
    if (this.#stopped) throw this.#error;
    const ws = this.#ws;
    if (this.#direct && ws && ws.readyState === OPEN) {
      ws.send(data);
      return;
    }
    const size = byteLength(data);
    if (this.#queue.length + 1 > this.#maxMessages || this.#queueBytes + size > this.#maxBytes) {
      throw new QueueFullError(this.#queue.length, this.#queueBytes, this.#maxMessages, this.#maxBytes, size);
    }
    this.#queue.push({ data, size });
    this.#queueBytes += size;
  }

  /**
   * close stops the client: it closes the current connection with code
   * (1000 or 3000–4999, the codes a browser may send) and reason, and stops
   * reconnecting. Queued messages stay in unsent().
   */
  close(code = 1000, reason = "") {
    if (code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new RangeError(`ebb: a browser cannot close with ${code}: want 1000 or 3000–4999`);
    }
    if (encoder.encode(reason).length > MAX_REASON_BYTES) {
      throw new RangeError(`ebb: close reason is longer than ${MAX_REASON_BYTES} bytes`);
    }
    if (this.#stopped) return;
    const ws = this.#detach();
    if (ws) {
      ws.close(code, reason);
      const d = { retry: false, retryClass: lookup(code).retryClass, code, reason, hint: 0, why: "the client closed the connection because it is stopping" };
      this.#emit({ state: State.CLOSED, attempt: this.#attempt, code, reason, remote: false, decision: d });
    }
    this.#stop(new ClientClosedError(), null);
  }

  #emit(e) {
    e.time = this.#now();
    this.#state = e.state;
    if (!this.#onEvent) return;
    try {
      this.#onEvent(e);
    } catch (err) {
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  #detach() {
    const ws = this.#ws;
    this.#ws = null;
    this.#direct = false;
    if (this.#timer !== null) {
      this.#clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    return ws;
  }

  #stop(error, decision) {
    this.#detach();
    this.#stopped = true;
    this.#error = error;
    this.#emit({ state: State.STOPPED, decision, error, unsent: this.#queue.length });
    for (const r of this.#ready.splice(0)) {
      if (this.#openedOnce) r.resolve(this);
      else r.reject(error);
    }
  }

  #connect() {
    this.#timer = null;
    if (this.#stopped) return;
    this.#emit({ state: State.CONNECTING, attempt: this.#attempt });
    if (this.#stopped) return; // onEvent may have closed the client
    let ws;
    try {
      ws = this.#protocols.length ? new this.#WS(this.#url, this.#protocols) : new this.#WS(this.#url);
    } catch (err) {
      // A URL or subprotocol the browser refuses: retrying repeats it.
      const d = this.#policy.decide(1002, "");
      d.why = `the browser refused to open the connection: ${err.message}`;
      d.error = err;
      this.#after({ code: 0, reason: "", remote: false, decision: d, error: err });
      return;
    }
    ws.binaryType = this.#binaryType;
    this.#ws = ws;
    ws.onopen = () => this.#opened(ws);
    ws.onmessage = (ev) => {
      if (ws === this.#ws && this.#onMessage) this.#onMessage(ev.data, ev);
    };
    ws.onerror = () => {}; // the close event follows and carries all a browser reveals
    ws.onclose = (ev) => {
      if (ws !== this.#ws) return;
      this.#detach();
      const code = ev.code || ABNORMAL_CLOSURE;
      const d = this.#policy.decide(code, ev.reason || "");
      this.#after({ code, reason: ev.reason || "", remote: code !== ABNORMAL_CLOSURE && code !== TLS_HANDSHAKE, decision: d });
    };
  }

  async #opened(ws) {
    if (ws !== this.#ws) return;
    const missing = missingExtensions(this.#require, ws.extensions);
    if (missing.length > 0) {
      const err = new MandatoryExtensionError(this.#require, ws.extensions, missing);
      this.#detach();
      ws.close(1000, err.closeReason);
      const d = this.#policy.decide(MANDATORY_EXTENSION, err.closeReason);
      d.error = err;
      this.#after({ code: MANDATORY_EXTENSION, reason: err.closeReason, remote: false, decision: d, error: err });
      return;
    }
    this.#schedule.opened(this.#now());
    const first = !this.#openedOnce;
    this.#openedOnce = true;
    this.#emit({ state: State.OPEN, attempt: this.#attempt });
    if (first) {
      for (const r of this.#ready.splice(0)) r.resolve(this);
    }
    if (ws !== this.#ws) return; // onEvent may have closed the client
    if (this.#onConnect) {
      try {
        await this.#onConnect(ws);
      } catch (err) {
        if (ws !== this.#ws) return;
        this.#detach();
        ws.close(1000, "onConnect failed");
        const d = {
          retry: true, retryClass: "backoff", code: INTERNAL_ERROR, reason: "onConnect failed", hint: 0,
          why: "the onConnect hook failed: retry with backoff", error: err,
        };
        this.#after({ code: INTERNAL_ERROR, reason: d.reason, remote: false, decision: d, error: err });
        return;
      }
      if (ws !== this.#ws) return;
    }
    while (this.#queue.length > 0 && ws.readyState === OPEN) {
      const m = this.#queue.shift();
      this.#queueBytes -= m.size;
      ws.send(m.data);
    }
    this.#direct = ws.readyState === OPEN;
  }

  // after reports how a connection or attempt ended and schedules the next.
  #after({ code, reason, remote, decision, error }) {
    if (error) decision.error = error;
    this.#emit({ state: State.CLOSED, attempt: this.#attempt, code, reason, remote, decision, error: error || null });
    if (this.#stopped) return;
    const { wait, error: gaveUp } = this.#schedule.next(this.#now(), decision);
    if (gaveUp) {
      this.#stop(gaveUp, decision);
      return;
    }
    this.#attempt = wait.attempt;
    this.#emit({ state: State.WAITING, attempt: wait.attempt, delay: wait.delay, hinted: wait.hinted, decision });
    if (this.#stopped) return; // onEvent may have closed the client
    this.#timer = this.#setTimeout(() => this.#connect(), wait.delay);
  }
}
