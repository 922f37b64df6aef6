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
//
// Resuming a broadcast (ebb's resume protocol, the subprotocol
// "ebb.resume.v1", the same as Go's reconnect.Options.Resume): a client
// that reconnects after 1012, 1013 or a lost network gets every message it
// missed, once and in order, or is told which ones are gone.
//
//   const feed = new Client("/broadcast", {
//     resume: true,                     // or { from: savedLastSeq + 1 }
//     onMessage: (data) => show(data),  // payloads without the envelope
//     onGap: (gap) => resync(gap),      // a GapError, in order with the messages
//   });
//   // feed.lastSeq: the last sequence delivered (save it to continue later)
//   // feed.live: the replay is over, messages are live
//
// The client offers "ebb.resume.v1", adds from=<lastSeq + 1> to the URL of
// every connection once it has a position, strips the "<seq>\n" envelope
// (text stays a string; binary arrives as an ArrayBuffer, or a Blob with
// binaryType "blob"), and drops duplicates (sequence ≤ lastSeq). Where the
// stream has a hole it calls onGap with a GapError: "too-old" (the
// server's history no longer holds them), "reset" (the server's numbering
// restarted), or "no-resume" (the server did not select the subprotocol,
// or the link broke before the client learned its position); without
// onGap, console.warn reports it, so a gap is never silent. The open event
// says whether the server selected the subprotocol (resume: "accepted" or
// "refused"); on a refused connection messages are delivered plain. A
// message that breaks the protocol ends the connection (with 1000, as a
// browser cannot send 1008) and stops the client with a GaveUpError
// caused by a MalformedResumeError: a new connection would replay it.
// Sequences above 2^53 − 1, which a JavaScript number cannot hold
// exactly, count as malformed.

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
  restartStable: 1000,
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
const POLICY_VIOLATION = 1008;
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
 * parseRetryHint reads "retry-after=<seconds>" from a close reason exactly
 * as Go's closecode.ParseRetryHint does (the two share their test vectors,
 * closecode/testdata/retry_hints.json): the last occurrence of the key, not
 * glued to a word before it; the value plain decimal seconds (digits,
 * optionally "." and digits) standing apart from what follows, at most
 * MAX_RETRY_HINT_SECONDS. Anything else — 1e308, inf, -1, 4.5abc, .5 — is
 * no hint. It returns milliseconds, or null.
 */
export function parseRetryHint(reason) {
  if (typeof reason !== "string") return null;
  const i = reason.lastIndexOf(RETRY_HINT_KEY);
  if (i < 0 || (i > 0 && isWordChar(reason[i - 1]))) return null;
  const rest = reason.slice(i + RETRY_HINT_KEY.length);
  let end = 0;
  while (end < rest.length && isWordChar(rest[end])) end++;
  const m = /^([0-9]+)(?:\.([0-9]+))?$/.exec(rest.slice(0, end));
  if (!m) return null;
  const whole = m[1].replace(/^0+(?=[0-9])/, "");
  if (whole.length > String(MAX_RETRY_HINT_SECONDS).length) return null;
  const secs = Number(whole);
  // Past nanoseconds, digits are dropped, as in Go.
  const nanos = Number(((m[2] || "") + "000000000").slice(0, 9));
  if (secs > MAX_RETRY_HINT_SECONDS || (secs === MAX_RETRY_HINT_SECONDS && nanos > 0)) return null;
  return secs * 1000 + nanos / 1e6;
}

// isWordChar: a letter, a digit, or one of "._+-" — what a hint's key and
// value must not be glued to (Go: closecode's isWordByte).
function isWordChar(c) {
  return /[A-Za-z0-9._+-]/.test(c);
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
    restartStable = DEFAULTS.restartStable,
    maxAttempts = 0,
    maxElapsed = 0,
    persistent = false,
    application = null,
  } = {}) {
    this.backoff = new Backoff({ base, cap, jitter });
    this.stablePeriod = stablePeriod > 0 ? stablePeriod : DEFAULTS.stablePeriod;
    // A 1012 after a connection served this long resets the count too:
    // the server restarted on purpose (a rolling restart), and its hint
    // paces the return; a server looping in restarts still gets backoff.
    this.restartStable = restartStable > 0 ? restartStable : DEFAULTS.restartStable;
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
      let stable = this.#policy.stablePeriod;
      if (decision.retryClass === "soon") stable = Math.min(stable, this.#policy.restartStable);
      if (now - this.#upSince >= stable) {
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

/** RESUME_SUBPROTOCOL is the subprotocol of ebb's resume protocol, version 1. */
export const RESUME_SUBPROTOCOL = "ebb.resume.v1";
/** RESUME_FROM_PARAM is the query parameter carrying the first sequence wanted. */
export const RESUME_FROM_PARAM = "from";
const MAX_SEQ_DIGITS = 16; // Number.MAX_SAFE_INTEGER has 16 digits

/**
 * MalformedResumeError: a message that breaks ebb.resume.v1. The server
 * must be fixed; retrying replays the same message.
 */
export class MalformedResumeError extends Error {
  constructor(type, head, length, why) {
    const more = length > head.length ? `… (${length} ${type === "text" ? "characters" : "bytes"})` : "";
    super(`ebb: malformed ${RESUME_SUBPROTOCOL} message (${type} ${JSON.stringify(head)}${more}): ${why}`);
    this.name = "MalformedResumeError";
    this.code = POLICY_VIOLATION;
    this.why = why;
  }

  /** closeReason is the reason the client closes with, within the 123-byte limit. */
  get closeReason() {
    return truncateReason(`malformed ${RESUME_SUBPROTOCOL} message: ${this.why}`);
  }
}

/**
 * GapError reports a hole in a resumed stream; onGap receives it, in order
 * with the messages. reason is "too-old", "reset" or "no-resume"; from is
 * the first sequence that may be missing and next the one delivery
 * continues with (0 when unknown).
 */
export class GapError extends Error {
  constructor(reason, from, next) {
    let msg;
    if (reason === "too-old") {
      const what = next - from === 1 ? `message ${from} is` : `messages ${from}–${next - 1} (${next - from}) are`;
      msg = `ebb: ${what} lost (no longer in the server's history); delivery continues with ${next}`;
    } else if (reason === "reset") {
      msg = `ebb: the server's numbering restarted at ${next}, below the ${from} the client asked for: its history was reset (a restart without its store?); messages from ${from} on in the old numbering may be lost; delivery continues with ${next}`;
    } else if (next === 0) {
      msg = `ebb: the server did not select the subprotocol ${RESUME_SUBPROTOCOL}, so messages published while the client was away${from > 0 ? ` (from ${from} on)` : ""} cannot be asked for and may be lost; the messages that follow are plain: enable resume on the server`;
    } else {
      msg = `ebb: the connection ended before the client learned its position, so messages before ${next} published while it was away may be lost; delivery continues with ${next}`;
    }
    super(msg);
    this.name = "GapError";
    this.reason = reason;
    this.from = from;
    this.next = next;
  }
}

const textDecoder = new TextDecoder("utf-8");

function isDigit(c) {
  return c >= 0x30 && c <= 0x39;
}

// parseSeq parses a sequence from char codes: decimal, ≥ 1, no leading
// zeros, at most Number.MAX_SAFE_INTEGER. It returns [n, ""] or [0, why].
function parseSeq(codes) {
  if (codes.length === 0) return [0, "empty, want a decimal sequence ≥ 1"];
  let n = 0;
  for (const c of codes) {
    if (!isDigit(c)) return [0, "not a decimal number"];
    n = n * 10 + (c - 0x30);
  }
  if (!Number.isSafeInteger(n)) return [0, `larger than ${Number.MAX_SAFE_INTEGER}, which ebb.js cannot count exactly`];
  if (n === 0) return [0, "sequences start at 1"];
  if (codes[0] === 0x30) return [0, "leading zero"];
  return [n, ""];
}

function codesOf(s) {
  const out = [];
  for (let i = 0; i < s.length; i++) out.push(s.charCodeAt(i));
  return out;
}

/**
 * parseResumeMessage decodes a message of ebb.resume.v1, as Go's
 * reconnect.ParseResumeMessage does: a string (text frame) or an
 * ArrayBuffer/typed array (binary frame). It returns {kind: "data", seq,
 * payload} (payload a string or an ArrayBuffer), {kind: "gap", from, next},
 * {kind: "live", next} or {kind: "other", word}, and throws a
 * MalformedResumeError for anything else.
 */
export function parseResumeMessage(data) {
  const text = typeof data === "string";
  let bytes = null;
  if (!text) {
    if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else throw new TypeError("ebb: parseResumeMessage wants a string or an ArrayBuffer");
  }
  const length = text ? data.length : bytes.length;
  const at = (i) => (text ? data.charCodeAt(i) : bytes[i]);
  const fail = (why) => {
    const head = text ? data.slice(0, 32) : textDecoder.decode(bytes.subarray(0, 32));
    throw new MalformedResumeError(text ? "text" : "binary", head, length, why);
  };
  if (length === 0) fail('empty message: want a sequence and a newline before the payload, or a text control starting with "!"');
  const c = at(0);
  if (isDigit(c)) {
    let nl = 1;
    while (nl < length && nl <= MAX_SEQ_DIGITS && isDigit(at(nl))) nl++;
    const digits = [];
    for (let i = 0; i < nl; i++) digits.push(at(i));
    const seqText = String.fromCharCode(...digits);
    if (nl > MAX_SEQ_DIGITS) fail(`sequence of more than ${MAX_SEQ_DIGITS} digits: ebb.js counts up to ${Number.MAX_SAFE_INTEGER}`);
    if (nl === length) fail(`sequence ${JSON.stringify(seqText)} is not followed by a newline: want the sequence, a newline, then the payload`);
    if (at(nl) !== 0x0a) fail(`sequence ${JSON.stringify(seqText)} is followed by ${JSON.stringify(String.fromCharCode(at(nl)))}: want a newline, then the payload`);
    const [seq, why] = parseSeq(digits);
    if (why) fail(`sequence ${JSON.stringify(seqText)}: ${why}`);
    const payload = text ? data.slice(nl + 1) : bytes.slice(nl + 1).buffer;
    return { kind: "data", seq, payload };
  }
  if (c !== 0x21) {
    fail(`starts with ${JSON.stringify(String.fromCharCode(c))}: want a decimal sequence (data) or "!" (a text control)`);
  }
  if (!text) fail('a control message in a binary frame: controls ("!…") are text');
  const sp = data.indexOf(" ");
  const word = sp < 0 ? data.slice(1) : data.slice(1, sp);
  const args = sp < 0 ? "" : data.slice(sp + 1);
  if (word === "gap") {
    const i = args.indexOf(" ");
    if (i < 0) fail('want "!gap <from> <next>", two sequences after the word');
    const a = args.slice(0, i);
    const b = args.slice(i + 1);
    const [from, whyA] = parseSeq(codesOf(a));
    if (whyA) fail(`!gap from ${JSON.stringify(a)}: ${whyA}`);
    const [next, whyB] = parseSeq(codesOf(b));
    if (whyB) fail(`!gap next ${JSON.stringify(b)}: ${whyB}`);
    if (next <= from) fail(`!gap ${from} ${next}: want from < next (the gap is from … next-1)`);
    return { kind: "gap", from, next };
  }
  if (word === "live") {
    const [next, why] = parseSeq(codesOf(args));
    if (why) fail(`!live next ${JSON.stringify(args)}: ${why}; want "!live <next>"`);
    return { kind: "live", next };
  }
  if (word === "") fail('no word after "!": want "!gap <from> <next>", "!live <next>" or another word');
  return { kind: "other", word: word.slice(0, 64) };
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
      if (e.attempt > 0 && e.from > 0) s += ` (attempt ${e.attempt}, resuming from ${e.from})`;
      else if (e.attempt > 0) s += ` (attempt ${e.attempt})`;
      else if (e.from > 0) s += ` (resuming from ${e.from})`;
      if (e.state === State.OPEN && e.resume === "refused") {
        s += `: the server did not select ${RESUME_SUBPROTOCOL} (selected ${e.protocol ? JSON.stringify(e.protocol) : "none"}): messages are plain and nothing missed can be resumed`;
      }
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
 *   resume          true or {from}: resume a broadcast with ebb.resume.v1 (see the top of this file);
 *                   from is the first sequence wanted on the first connection (e.g. a saved lastSeq + 1)
 *   onMessage(data, event)     every message, from every connection, in order
 *   onGap(gap)      a GapError where a resumed stream has a hole, in order with onMessage
 *                   (default: console.warn)
 *   onEvent(event)  every state change, synchronously; exceptions it throws are re-thrown asynchronously
 *   onConnect(ws)   runs on each new connection before the queue is flushed (re-subscribe here);
 *                   may return a Promise; a throw or rejection closes the connection and counts as a
 *                   failed attempt (retried with backoff)
 *   WebSocket, random, now, setTimeout, clearTimeout   injectable for tests
 *
 * An event is {state, time, attempt, code, reason, remote, delay, hinted,
 * decision, error, unsent, from, resume, protocol}; which fields are set
 * depends on state, as in the Go package's Event. from (connecting, open) is
 * the sequence a resuming client asked for (0: live only); resume (open) is
 * "off", "accepted" or "refused"; protocol (open) is the subprotocol the
 * server selected.
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
  #onGap;
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

  // Resume: #resume is on; #known says #last (the last sequence
  // delivered) is valid; #wsResume is the current connection's status;
  // #reconnected says an earlier connection was open.
  #resume = false;
  #known = false;
  #last = 0;
  #live = false;
  #wsResume = "off";
  #reconnected = false;

  constructor(url, options = {}) {
    this.#url = resolveURL(url);
    const o = options;
    this.#protocols = [...(o.protocols || [])];
    if (o.resume) {
      const from = o.resume === true ? 0 : o.resume.from || 0;
      if (!Number.isSafeInteger(from) || from < 0) {
        throw new TypeError(`ebb: resume.from is ${JSON.stringify(from)}: want the sequence of the first message wanted, an integer ≥ 1 (or 0 for live messages only)`);
      }
      if (new URL(this.#url).searchParams.has(RESUME_FROM_PARAM)) {
        throw new TypeError(`ebb: URL ${JSON.stringify(url)} already has the query parameter ${RESUME_FROM_PARAM}, which a resuming client sets itself on every connection: remove it and pass resume: {from} instead`);
      }
      this.#resume = true;
      this.#protocols = [RESUME_SUBPROTOCOL, ...this.#protocols.filter((p) => p !== RESUME_SUBPROTOCOL)];
      if (from > 0) {
        this.#known = true;
        this.#last = from - 1;
      }
    }
    this.#require = [...(o.require || [])];
    this.#policy = new Policy(o);
    this.#binaryType = o.binaryType || "blob";
    this.#onMessage = o.onMessage || null;
    this.#onGap = o.onGap || null;
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

  /** lastSeq is the sequence of the last message (or gap end) a resuming client delivered, or 0. */
  get lastSeq() {
    return this.#known ? this.#last : 0;
  }

  /** live reports that the current connection of a resuming client has replayed what it missed ("!live"). */
  get live() {
    return this.#live;
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
    this.#live = false;
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
    const from = this.#resume && this.#known && this.#last < Number.MAX_SAFE_INTEGER ? this.#last + 1 : 0;
    this.#emit({ state: State.CONNECTING, attempt: this.#attempt, from });
    if (this.#stopped) return; // onEvent may have closed the client
    let url = this.#url;
    if (from > 0) url += `${new URL(url).search ? "&" : "?"}${RESUME_FROM_PARAM}=${from}`;
    let ws;
    try {
      ws = this.#protocols.length ? new this.#WS(url, this.#protocols) : new this.#WS(url);
    } catch (err) {
      // A URL or subprotocol the browser refuses: retrying repeats it.
      const d = this.#policy.decide(1002, "");
      d.why = `the browser refused to open the connection: ${err.message}`;
      d.error = err;
      this.#after({ code: 0, reason: "", remote: false, decision: d, error: err });
      return;
    }
    // A resuming client reads binary envelopes as ArrayBuffers, synchronously,
    // and hands payloads over in the binaryType the application asked for.
    ws.binaryType = this.#resume ? "arraybuffer" : this.#binaryType;
    this.#ws = ws;
    ws.onopen = () => this.#opened(ws, from);
    // Messages that need an async step (a Blob to read) and those after
    // them go through chain, so that the order never changes.
    let chain = Promise.resolve();
    let pending = 0;
    ws.onmessage = (ev) => {
      if (ws !== this.#ws) return;
      if (this.#wsResume !== "accepted") {
        if (this.#onMessage) this.#onMessage(ev.data, ev);
        return;
      }
      const d = ev.data;
      const blob = typeof Blob !== "undefined" && d instanceof Blob;
      if (pending === 0 && !blob) {
        this.#resumed(ws, d, ev);
        return;
      }
      pending++;
      chain = chain.then(async () => {
        try {
          const data = blob ? await d.arrayBuffer() : d;
          if (ws === this.#ws) this.#resumed(ws, data, ev);
        } catch (err) {
          queueMicrotask(() => {
            throw err;
          });
        } finally {
          pending--;
        }
      });
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

  async #opened(ws, from) {
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
    this.#reconnected = !first;
    this.#wsResume = !this.#resume ? "off" : ws.protocol === RESUME_SUBPROTOCOL ? "accepted" : "refused";
    this.#emit({ state: State.OPEN, attempt: this.#attempt, from, resume: this.#wsResume, protocol: ws.protocol || "" });
    if (first) {
      for (const r of this.#ready.splice(0)) r.resolve(this);
    }
    if (ws !== this.#ws) return; // onEvent may have closed the client
    if (this.#wsResume === "refused" && (this.#known || this.#reconnected)) {
      // Plain messages follow: what was published while away cannot be asked for.
      this.#gap(new GapError("no-resume", this.#known ? this.#last + 1 : 0, 0));
      if (ws !== this.#ws) return;
    }
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

  // resumed acts on one message of a resuming connection: it delivers data
  // that is not a duplicate, reports gaps, and records "!live".
  #resumed(ws, data, ev) {
    let m;
    try {
      m = parseResumeMessage(data);
    } catch (err) {
      if (!(err instanceof MalformedResumeError)) throw err;
      // A browser cannot send 1008: close with 1000 and the reason, report 1008.
      this.#detach();
      ws.close(1000, err.closeReason);
      const d = {
        retry: false, retryClass: "permanent", code: POLICY_VIOLATION, reason: err.closeReason, hint: 0,
        why: `the server sent a malformed ${RESUME_SUBPROTOCOL} message, so the client closed the connection; a new connection would replay it: fix the server`,
      };
      this.#after({ code: POLICY_VIOLATION, reason: err.closeReason, remote: false, decision: d, error: err });
      return;
    }
    const known = this.#known;
    const last = this.#last;
    switch (m.kind) {
      case "data": {
        if (known && m.seq <= last) return; // a duplicate across a reconnection
        this.#known = true;
        this.#last = m.seq;
        if (!this.#onMessage) return;
        let payload = m.payload;
        if (typeof payload !== "string" && this.#binaryType === "blob" && typeof Blob !== "undefined") payload = new Blob([payload]);
        this.#onMessage(payload, ev);
        return;
      }
      case "gap":
        if (known && m.next - 1 <= last) return; // ends before anything not yet delivered
        this.#gap(new GapError("too-old", known && m.from <= last ? last + 1 : m.from, m.next));
        return;
      case "live":
        this.#live = true;
        if (!known && this.#reconnected) {
          // An earlier connection ended before the client learned its position.
          this.#gap(new GapError("no-resume", 0, m.next));
        } else if (!known) {
          this.#known = true;
          this.#last = m.next - 1;
        } else if (m.next <= last) {
          // The server's numbering restarted; without moving back, every new
          // message would be dropped as a duplicate.
          this.#gap(new GapError("reset", last + 1, m.next));
        }
        return;
      default:
        return; // a control of a later version: ignored
    }
  }

  // gap moves the position past a hole and reports it.
  #gap(g) {
    if (g.next > 0) {
      this.#known = true;
      this.#last = g.next - 1;
    }
    if (this.#onGap) this.#onGap(g);
    else console.warn(g.message);
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
