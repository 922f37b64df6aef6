// Unit tests of ebb.js's rules with a fake WebSocket and a fake clock, so
// every delay is exact. They mirror the Go tests of package reconnect: the
// same jitter draws must give the same delays on both sides. Run with
// `node --test web/ebb_test.mjs` (web_test.go does when node is on PATH);
// the Chromium test covers a real browser against a real server.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Backoff, Client, ClientClosedError, GaveUpError, MandatoryExtensionError, Policy, QueueFullError,
  describe, lookup, missingExtensions, parseRetryHint, truncateReason,
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
  open(ext = "") { this.readyState = 1; this.extensions = ext; this.onopen && this.onopen({}); }
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

test("misc", () => {
  assert.equal(truncateReason("é".repeat(100)).length, 61);
  assert.deepEqual(missingExtensions(["permessage-deflate", "x"], "permessage-deflate; server_no_context_takeover"), ["x"]);
  assert.equal(lookup(4001).name, "Private Use");
  assert.throws(() => new Client("ftp://x/", { WebSocket: FakeWS }), TypeError);
});
