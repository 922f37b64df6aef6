// Unit tests of ebb.js's rules with a fake WebSocket and a fake clock, so
// every delay is exact. They mirror the Go tests of package reconnect: the
// same jitter draws must give the same delays on both sides. Run with
// `node --test web/ebb_test.mjs` (web_test.go does when node is on PATH);
// the Chromium test covers a real browser against a real server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  Backoff, Client, ClientClosedError, GapError, GaveUpError, MalformedResumeError, MandatoryExtensionError, Policy, QueueFullError,
  RESUME_SUBPROTOCOL, describe, lookup, missingExtensions, parseResumeMessage, parseRetryHint, truncateReason,
} from "./ebb.js";

// FakeWS stands in for the browser's WebSocket; FakeWS.script[i] plays the
// server for connection i (the last entry for all later ones).
class FakeWS {
  static all = [];
  static script = []; // per connection: fn(ws) run after construction
  constructor(url, protocols) {
    this.url = url; this.protocols = protocols; this.readyState = 0; this.extensions = ""; this.sent = []; this.closedWith = null;
    FakeWS.all.push(this);
    const s = FakeWS.script[FakeWS.all.length - 1] || FakeWS.script[FakeWS.script.length - 1];
    queueMicrotask(() => s && s(this));
  }
  open(ext = "", protocol = "") { this.readyState = 1; this.extensions = ext; this.protocol = protocol; this.onopen && this.onopen({}); }
  message(data) { this.onmessage && this.onmessage({ data }); }
  serverClose(code, reason = "") { this.readyState = 3; this.onclose && this.onclose({ code, reason, wasClean: true }); }
  send(d) { if (this.readyState !== 1) throw new Error("not open"); this.sent.push(d); }
  close(code, reason) { this.closedWith = [code, reason]; this.readyState = 3; }
}

// fakeTime is an injectable clock whose timers fire only when told to.
function fakeTime() {
  const t = { now: 0, timers: [], waits: [] };
  t.setTimeout = (f, ms) => { t.waits.push(ms); const h = { f, at: t.now + ms }; t.timers.push(h); return h; };
  t.clearTimeout = (h) => { t.timers = t.timers.filter((x) => x !== h); };
  t.fire = () => { const h = t.timers.shift(); if (!h) return false; t.now = h.at; h.f(); return true; };
  return t;
}
const tick = () => new Promise((r) => setTimeout(r, 0));

test("backoff sequence matches Go", () => {
  const b = new Backoff();
  const us = [0, 0.5, 0.25, 0.75, 0, 0.5, 0.125];
  const want = [500, 1500, 2500, 7000, 8000, 22500, 16875];
  us.forEach((u, n) => assert.equal(b.delay(n, 0, () => u), want[n]));
  assert.deepEqual(b.window(0, 4500), [4500, 5000]);
  assert.equal(b.delay(3, 4500, () => 0.5), 6500);
  assert.equal(b.nominal(1000), 30000);
});

test("parseRetryHint matches Go", () => {
  assert.equal(parseRetryHint("server at capacity; retry-after=4.5"), 4500);
  assert.equal(parseRetryHint("retry-after=-1"), null);
  assert.equal(parseRetryHint("retry-after=1.2.3"), null);
  assert.equal(parseRetryHint("retry-after=86401"), null);
  assert.equal(parseRetryHint("retry-after=86400"), 86400000);
  assert.equal(parseRetryHint("nothing"), null);
});

test("decide table", () => {
  const p = new Policy(), pp = new Policy({ persistent: true }), pa = new Policy({ application: (c) => c < 4500 });
  const retry = [1001, 1006, 1011, 1012, 1013, 1014, 3008];
  for (const c of [1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015, 3000, 3003, 3008, 3500, 4000, 4999, 999, 2000, 5000]) {
    assert.equal(p.decide(c, "").retry, retry.includes(c), `default ${c}`);
    assert.equal(pp.decide(c, "").retry, retry.includes(c) || c === 1000 || c === 1005, `persistent ${c}`);
    assert.equal(pa.decide(c, "").retry, retry.includes(c) || c === 3500 || c === 4000, `app ${c}`);
  }
  assert.equal(p.decide(1008, "x; retry-after=5").hint, 0);
  assert.equal(p.decide(1013, "x; retry-after=5").hint, 5000);
});

test("1013 hint then accepted, queue flush order", async () => {
  FakeWS.all = [];
  FakeWS.script = [
    (ws) => { ws.open("permessage-deflate"); ws.serverClose(1013, "full; retry-after=0.2"); },
    (ws) => { ws.open("permessage-deflate"); ws.serverClose(1013, "full; retry-after=0.2"); },
    (ws) => { ws.open("permessage-deflate; client_max_window_bits"); },
  ];
  const t = fakeTime(); const events = [];
  const c = new Client("ws://x/ws", { WebSocket: FakeWS, now: () => t.now, setTimeout: t.setTimeout, clearTimeout: t.clearTimeout, random: () => 0, base: 10, require: ["permessage-deflate"],
    onEvent: (e) => events.push(e), onConnect: async (ws) => { ws.send("subscribe"); } });
  await tick();
  c.send("m0"); c.send("m1");
  while (t.fire()) await tick();
  await tick();
  c.send("m2");
  assert.deepEqual(FakeWS.all[2].sent, ["subscribe", "m0", "m1", "m2"]);
  assert.deepEqual(t.waits, [200, 200]);
  assert.equal(events.map((e) => e.state).join(" "), "connecting open closed waiting connecting open closed waiting connecting open");
  assert.ok(events.filter((e) => e.state === "waiting").every((e) => e.hinted && e.delay >= 200));
  await c.ready();
  c.close();
  assert.ok(c.error instanceof ClientClosedError);
  assert.throws(() => c.send("x"), ClientClosedError);
  assert.deepEqual(FakeWS.all[2].closedWith, [1000, ""]);
  assert.equal(describe(events[2]), "closed: 1013 Try Again Later (full; retry-after=0.2)");
  assert.equal(describe(events[3]), "waiting 0.200s before attempt 1 (server hint 0.2s)");
});

test("1008 stops", async () => {
  FakeWS.all = []; FakeWS.script = [(ws) => { ws.open(); ws.serverClose(1008, "banned; retry-after=1"); }];
  const t = fakeTime(); const events = [];
  const c = new Client("ws://x/", { WebSocket: FakeWS, now: () => t.now, setTimeout: t.setTimeout, clearTimeout: t.clearTimeout, onEvent: (e) => events.push(e) });
  await tick();
  assert.equal(events.map((e) => e.state).join(" "), "connecting open closed stopped");
  assert.ok(c.error instanceof GaveUpError);
  assert.equal(t.timers.length, 0);
  assert.equal(FakeWS.all.length, 1);
  await c.ready(); // it did open
});

test("missing extension: close 1000, 1010-class error, no retry", async () => {
  FakeWS.all = []; FakeWS.script = [(ws) => { ws.open(""); }];
  const t = fakeTime(); const events = [];
  const c = new Client("ws://x/", { WebSocket: FakeWS, now: () => t.now, setTimeout: t.setTimeout, clearTimeout: t.clearTimeout, require: ["permessage-deflate"], onEvent: (e) => events.push(e) });
  await assert.rejects(c.ready(), GaveUpError);
  assert.equal(events.map((e) => e.state).join(" "), "connecting closed stopped");
  assert.deepEqual(FakeWS.all[0].closedWith, [1000, "missing required extension: permessage-deflate"]);
  assert.ok(c.error.cause instanceof MandatoryExtensionError);
  assert.equal(c.error.decision.code, 1010);
  assert.equal(t.timers.length, 0);
});

test("queue bounds and flapping", async () => {
  FakeWS.all = []; FakeWS.script = [(ws) => { ws.open(); ws.serverClose(1011, "oops"); }];
  const t = fakeTime(); const events = [];
  const c = new Client("ws://x/", { WebSocket: FakeWS, now: () => t.now, setTimeout: t.setTimeout, clearTimeout: t.clearTimeout, random: () => 0, maxAttempts: 4, queueMessages: 2,
    onEvent: (e) => events.push(e) });
  await tick();
  c.send("a"); c.send("b");
  assert.throws(() => c.send("c"), QueueFullError);
  while (t.fire()) await tick();
  await tick();
  assert.deepEqual(t.waits, [500, 1000, 2000, 4000]);
  assert.equal(c.error.limit, "maxAttempts");
  // "a" and "b" went out on the first reconnection
  assert.deepEqual(FakeWS.all[1].sent, ["a", "b"]);
});

test("stable period resets", async () => {
  FakeWS.all = []; const t = fakeTime();
  FakeWS.script = [(ws) => { ws.open(); if (FakeWS.all.length === 3) t.now += 10000; ws.serverClose(1011, ""); }];
  const c = new Client("ws://x/", { WebSocket: FakeWS, now: () => t.now, setTimeout: t.setTimeout, clearTimeout: t.clearTimeout, random: () => 0, maxAttempts: 3 });
  await tick();
  while (t.fire()) await tick();
  assert.deepEqual(t.waits, [500, 1000, 500, 1000, 2000]);
});

test("a 1012 after serving a while resets, a 1012 right away does not", async () => {
  // A rolling restart: each node drains the client 3 s after it got in.
  FakeWS.all = []; let t = fakeTime();
  FakeWS.script = [(ws) => { ws.open(); t.now += 3000; ws.serverClose(1012, ""); }];
  let c = new Client("ws://x/", { WebSocket: FakeWS, now: () => t.now, setTimeout: t.setTimeout, clearTimeout: t.clearTimeout, random: () => 0, maxAttempts: 3 });
  await tick();
  for (let i = 0; i < 3 && t.fire(); i++) await tick();
  c.close();
  assert.deepEqual(t.waits.slice(0, 3), [500, 500, 500]);
  // A server that restarts within a second of accepting still gets backoff.
  FakeWS.all = []; t = fakeTime();
  FakeWS.script = [(ws) => { ws.open(); t.now += 200; ws.serverClose(1012, ""); }];
  c = new Client("ws://x/", { WebSocket: FakeWS, now: () => t.now, setTimeout: t.setTimeout, clearTimeout: t.clearTimeout, random: () => 0, maxAttempts: 3 });
  await tick();
  while (t.fire()) await tick();
  assert.deepEqual(t.waits, [500, 1000, 2000]);
});

test("parseRetryHint reads hints exactly as closecode.ParseRetryHint", async () => {
  const { readFile } = await import("node:fs/promises");
  const vectors = JSON.parse(await readFile(new URL("../closecode/testdata/retry_hints.json", import.meta.url), "utf8"));
  assert.ok(vectors.length >= 30);
  for (const v of vectors) {
    const got = parseRetryHint(v.reason);
    if (v.ns === null) assert.equal(got, null, v.reason);
    else assert.ok(got !== null && Math.abs(got * 1e6 - v.ns) < 1, `${v.reason}: got ${got} ms, want ${v.ns} ns`);
  }
});

test("misc", () => {
  assert.equal(truncateReason("é".repeat(100)).length, 61);
  assert.deepEqual(missingExtensions(["permessage-deflate", "x"], "permessage-deflate; server_no_context_takeover"), ["x"]);
  assert.equal(lookup(4001).name, "Private Use");
  assert.throws(() => new Client("ftp://x/", { WebSocket: FakeWS }), TypeError);
});

// ---- resume (ebb.resume.v1) ----

const bin = (s) => Uint8Array.from(s, (c) => c.charCodeAt(0)).buffer; // one byte per code point
const str = (b) => String.fromCharCode(...new Uint8Array(b));

test("parseResumeMessage agrees with Go on the shared vectors", () => {
  const { vectors } = JSON.parse(readFileSync(new URL("./testdata/resume_vectors.json", import.meta.url), "utf8"));
  assert.ok(vectors.length >= 20);
  for (const v of vectors) {
    const data = v.type === "binary" ? bin(v.data) : v.data;
    if (!v.want) {
      assert.throws(() => parseResumeMessage(data), (err) => err instanceof MalformedResumeError && err.message.includes(v.error), v.name);
      continue;
    }
    const m = parseResumeMessage(data);
    const got = { kind: m.kind, seq: m.seq || 0, from: m.from || 0, next: m.next || 0, word: m.word || "", payload: m.payload === undefined ? "" : typeof m.payload === "string" ? m.payload : str(m.payload) };
    const want = { kind: v.want.kind, seq: v.want.seq || 0, from: v.want.from || 0, next: v.want.next || 0, word: v.want.word || "", payload: v.want.payload || "" };
    assert.deepEqual(got, want, v.name);
  }
  // Beyond what a JavaScript number holds exactly: refused, not rounded.
  assert.throws(() => parseResumeMessage("9007199254740992\nx"), /cannot count exactly/);
  assert.throws(() => parseResumeMessage("12345678901234567\nx"), /more than 16 digits/);
  assert.throws(() => parseResumeMessage({}), TypeError);
});

// resumeClient starts a resuming client on FakeWS and records, in one
// list, what it delivers ("m:<data>"), the gaps ("gap:<reason> <from> <next>")
// and the events.
function resumeClient(options = {}) {
  const t = fakeTime(); const got = []; const events = [];
  const c = new Client(options.url || "ws://x/feed", {
    WebSocket: FakeWS, now: () => t.now, setTimeout: t.setTimeout, clearTimeout: t.clearTimeout, random: () => 0, base: 10,
    resume: true, binaryType: "arraybuffer",
    onMessage: (d) => got.push(`m:${typeof d === "string" ? d : d instanceof ArrayBuffer ? "bin " + str(d) : "blob " + d.size}`),
    onGap: (g) => { assert.ok(g instanceof GapError); got.push(`gap:${g.reason} ${g.from} ${g.next}`); },
    onEvent: (e) => events.push(e),
    ...options,
  });
  return { c, t, got, events };
}

async function run(t) {
  await tick();
  while (t.fire()) await tick();
  await tick();
}

test("resume: from= on reconnect, envelopes stripped, duplicates dropped, live", async () => {
  FakeWS.all = [];
  FakeWS.script = [
    (ws) => {
      ws.open("", RESUME_SUBPROTOCOL);
      ws.message("!live 1");
      ws.message("1\na");
      ws.message(bin("2\n\x00\xff"));
      ws.serverClose(1012, "restarting; retry-after=0.01");
    },
    (ws) => {
      ws.open("", RESUME_SUBPROTOCOL);
      ws.message("2\nduplicate"); // an at-least-once replay
      ws.message("3\nc");
      ws.message(bin("4\n!gap 1 2")); // a payload that looks like a control
      ws.message("!ping"); // a control of a later version
      ws.message("!live 5");
    },
  ];
  const { c, t, got, events } = resumeClient({ url: "ws://x/feed?room=a%20b", protocols: ["chat"] });
  await run(t);
  assert.deepEqual(got, ["m:a", "m:bin \x00\xff", "m:c", "m:bin !gap 1 2"]);
  assert.equal(c.lastSeq, 4);
  assert.equal(c.live, true);
  assert.deepEqual(FakeWS.all.map((w) => w.url), ["ws://x/feed?room=a%20b", "ws://x/feed?room=a%20b&from=3"]);
  assert.deepEqual(FakeWS.all[0].protocols, [RESUME_SUBPROTOCOL, "chat"]);
  const opens = events.filter((e) => e.state === "open");
  assert.deepEqual(opens.map((e) => [e.resume, e.from, e.protocol]), [["accepted", 0, RESUME_SUBPROTOCOL], ["accepted", 3, RESUME_SUBPROTOCOL]]);
  assert.equal(describe(opens[1]), "open (attempt 1, resuming from 3)");
  assert.equal(describe(events.find((e) => e.state === "connecting" && e.from === 3)), "connecting (attempt 1, resuming from 3)");
  c.close();
  assert.equal(c.live, false);
});

test("resume: a gap is reported in order, then delivery goes on", async () => {
  FakeWS.all = [];
  FakeWS.script = [
    (ws) => { ws.open("", RESUME_SUBPROTOCOL); ws.message("!live 1"); ws.message("1\na"); ws.message("2\nb"); ws.serverClose(1013, "behind; retry-after=0.01"); },
    (ws) => { ws.open("", RESUME_SUBPROTOCOL); ws.message("!gap 3 8"); ws.message("8\nh"); ws.message("!live 9"); ws.message("9\ni"); },
  ];
  const { c, t, got } = resumeClient();
  await run(t);
  assert.deepEqual(got, ["m:a", "m:b", "gap:too-old 3 8", "m:h", "m:i"]);
  assert.equal(FakeWS.all[1].url, "ws://x/feed?from=3");
  assert.equal(new GapError("too-old", 3, 8).message, "ebb: messages 3–7 (5) are lost (no longer in the server's history); delivery continues with 8");
  assert.equal(new GapError("too-old", 4, 5).message, "ebb: message 4 is lost (no longer in the server's history); delivery continues with 5");
  assert.equal(c.error, null);
  c.close();
});

test("resume: a reset numbering is reported, not dropped as duplicates", async () => {
  FakeWS.all = [];
  FakeWS.script = [
    (ws) => { ws.open("", RESUME_SUBPROTOCOL); ws.message("!live 1"); for (let i = 1; i <= 5; i++) ws.message(`${i}\nold${i}`); ws.serverClose(1012, ""); },
    (ws) => { ws.open("", RESUME_SUBPROTOCOL); ws.message("!live 1"); ws.message("1\nnew1"); ws.message("2\nnew2"); },
  ];
  const { c, t, got } = resumeClient();
  await run(t);
  assert.deepEqual(got.slice(5), ["gap:reset 6 1", "m:new1", "m:new2"]);
  assert.equal(c.lastSeq, 2);
  assert.equal(FakeWS.all[1].url, "ws://x/feed?from=6");
  c.close();
});

test("resume: a server without the subprotocol is reported; messages plain", async () => {
  FakeWS.all = [];
  FakeWS.script = [
    (ws) => { ws.open(""); ws.message("1\nlooks like an envelope"); ws.serverClose(1012, ""); },
    (ws) => { ws.open(""); ws.message("plain"); },
  ];
  const { c, t, got, events } = resumeClient();
  await run(t);
  assert.deepEqual(got, ["m:1\nlooks like an envelope", "gap:no-resume 0 0", "m:plain"]);
  const open = events.find((e) => e.state === "open");
  assert.equal(open.resume, "refused");
  assert.equal(describe(open), "open: the server did not select ebb.resume.v1 (selected none): messages are plain and nothing missed can be resumed");
  assert.equal(c.lastSeq, 0);
  assert.equal(c.live, false);
  assert.deepEqual(FakeWS.all.map((w) => w.url), ["ws://x/feed", "ws://x/feed"]);
  c.close();

  // With a saved position the first connection reports it already; without
  // onGap the report goes to console.warn.
  FakeWS.all = []; FakeWS.script = [(ws) => { ws.open(""); ws.message("plain"); }];
  const warned = [];
  const warn = console.warn;
  console.warn = (m) => warned.push(m);
  try {
    const r = resumeClient({ resume: { from: 10 }, onGap: undefined });
    await run(r.t);
    assert.equal(FakeWS.all[0].url, "ws://x/feed?from=10");
    assert.deepEqual(r.got, ["m:plain"]);
    assert.equal(warned.length, 1);
    assert.match(warned[0], /did not select the subprotocol ebb\.resume\.v1, so messages published while the client was away \(from 10 on\)/);
    r.c.close();
  } finally {
    console.warn = warn;
  }
});

test("resume: a link lost before !live cannot ask for what it missed, and says so", async () => {
  FakeWS.all = [];
  FakeWS.script = [
    (ws) => { ws.open("", RESUME_SUBPROTOCOL); ws.serverClose(1012, ""); },
    (ws) => { ws.open("", RESUME_SUBPROTOCOL); ws.message("!live 7"); ws.message("7\nseven"); },
  ];
  const { c, t, got } = resumeClient();
  await run(t);
  assert.deepEqual(got, ["gap:no-resume 0 7", "m:seven"]);
  assert.deepEqual(FakeWS.all.map((w) => w.url), ["ws://x/feed", "ws://x/feed"]);
  c.close();
});

test("resume: a malformed message closes, stops with a 1008-class error, no retry", async () => {
  for (const [bad, why] of [["hello", "starts with"], [bin("!live 3"), "control message in a binary frame"], ["!gap 9 5", "want from < next"], ["01\nx", "leading zero"]]) {
    FakeWS.all = [];
    FakeWS.script = [(ws) => { ws.open("", RESUME_SUBPROTOCOL); ws.message("!live 1"); ws.message("1\nfine"); ws.message(bad); ws.message("2\nafter"); }];
    const { c, t, got, events } = resumeClient();
    await run(t);
    assert.deepEqual(got, ["m:fine"], why);
    assert.equal(events.map((e) => e.state).join(" "), "connecting open closed stopped");
    const [code, reason] = FakeWS.all[0].closedWith;
    assert.equal(code, 1000); // a browser cannot send 1008
    assert.ok(reason.startsWith("malformed ebb.resume.v1 message: ") && reason.includes(why) && new TextEncoder().encode(reason).length <= 123, reason);
    const closed = events[2];
    assert.equal(closed.code, 1008);
    assert.equal(closed.remote, false);
    assert.ok(closed.error instanceof MalformedResumeError);
    assert.ok(c.error instanceof GaveUpError && c.error.cause instanceof MalformedResumeError);
    assert.match(c.error.message, /fix the server/);
    assert.equal(t.timers.length, 0);
    assert.equal(FakeWS.all.length, 1);
  }
});

test("resume: Blob messages keep their place in the order", async () => {
  FakeWS.all = [];
  FakeWS.script = [(ws) => {
    ws.open("", RESUME_SUBPROTOCOL);
    ws.message("!live 1");
    ws.message(new Blob(["1\nfrom a blob"])); // a WebSocket that ignored binaryType
    ws.message("2\ntext after it");
    ws.message(new Blob(["2\nduplicate"]));
    ws.message("3\nlast");
  }];
  const { c, t, got } = resumeClient({ binaryType: "blob" });
  await run(t);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(FakeWS.all[0].binaryType, "arraybuffer"); // envelopes are read synchronously
  assert.deepEqual(got, ["m:blob 11", "m:text after it", "m:last"]);
  assert.equal(c.lastSeq, 3);
  c.close();
});

test("resume: options checked", () => {
  assert.throws(() => new Client("ws://x/?from=3", { WebSocket: FakeWS, resume: true }), /pass resume: \{from\}/);
  assert.throws(() => new Client("ws://x/", { WebSocket: FakeWS, resume: { from: -1 } }), TypeError);
  assert.throws(() => new Client("ws://x/", { WebSocket: FakeWS, resume: { from: 1.5 } }), TypeError);
  FakeWS.all = []; FakeWS.script = [() => {}];
  const c = new Client("ws://x/?from=3", { WebSocket: FakeWS, setTimeout: () => 0, clearTimeout: () => {} }); // not resuming: the URL is the application's
  assert.equal(FakeWS.all[0].url, "ws://x/?from=3");
  assert.equal(FakeWS.all[0].protocols, undefined);
  c.close();
});
