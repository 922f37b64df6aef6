// Unit tests of the dashboard's pure helpers (gridlines, drain shading,
// close-code rows). The helpers live in dashboard.html's inline module
// between two marker comments; this file loads that block as a module of
// its own. Run with `node --test web/dashboard_test.mjs` (web_test.go does
// when node is on PATH).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const html = readFileSync(new URL("./dashboard.html", import.meta.url), "utf8");
const begin = html.indexOf("// ---- pure helpers");
const end = html.indexOf("// ---- the page ----");
assert.ok(begin > 0 && end > begin, "dashboard.html lacks the pure helpers' markers");
const h = await import("data:text/javascript," + encodeURIComponent(html.slice(begin, end)));

test("gridlines are round and labelled as they are", () => {
  assert.deepEqual(h.niceTicks(5, 4, true), [0, 2, 4, 6]);
  assert.deepEqual(h.niceTicks(3, 4, true), [0, 1, 2, 3]);
  assert.deepEqual(h.niceTicks(2.5, 4), [0, 1, 2, 3]);
  assert.deepEqual(h.niceTicks(0.9, 4), [0, 0.5, 1]);
  assert.deepEqual(h.niceTicks(48, 4, true), [0, 20, 40, 60]);
  assert.deepEqual(h.niceTicks(0, 4, true), [0, 1]);
  assert.equal(h.formatTick(2.5), "2.5"); // the old labels said "3"
  assert.equal(h.formatTick(0.5), "0.5");
  assert.equal(h.formatTick(75000), "75,000");
});

test("every tick stays a round value and the last covers the top", () => {
  for (const top of [0.3, 1, 2.5, 7, 12, 48, 99, 1001, 75000]) {
    for (const integer of [false, true]) {
      const t = h.niceTicks(top, 4, integer);
      assert.ok(t[t.length - 1] >= top, `niceTicks(${top}) = ${t}: last below the top`);
      assert.ok(t.length >= 2 && t.length <= 7, `niceTicks(${top}) = ${t}: too few or too many`);
      if (integer) assert.ok(t.every(Number.isInteger), `niceTicks(${top}, integer) = ${t}`);
    }
  }
});

test("drain runs", () => {
  assert.deepEqual(h.drainRuns([false, true, true, false, true]), [[1, 2], [4, 4]]);
  assert.deepEqual(h.drainRuns([false, false]), []);
});

test("per-second rates", () => {
  const hist = [{ t: "2025-01-01T00:00:00Z", n: 0 }, { t: "2025-01-01T00:00:02Z", n: 5 }, { t: "2025-01-01T00:00:03Z", n: 5 }];
  assert.deepEqual(h.perSecond(hist, "n"), [2.5, 0]);
});

test("close-code rows mark echoes by the registry's sender", () => {
  const c1010 = h.codeRow({ code: 1010, name: "Mandatory Extension", sent: 0, echoed: 1, received: 1, retry: "permanent" }, { sender: "client" });
  assert.equal(c1010.out, "1 echo");
  assert.equal(c1010.outEcho, true);
  assert.equal(c1010.in, "1");
  assert.match(c1010.chooser, /client/);
  const c1013 = h.codeRow({ code: 1013, name: "Try Again Later", sent: 75, received: 70, retry: "backoff" }, { sender: "server" });
  assert.equal(c1013.out, "75");
  assert.equal(c1013.in, "70 echoes");
  assert.equal(c1013.inEcho, true);
  const c1000 = h.codeRow({ code: 1000, name: "Normal Closure", sent: 3, echoed: 2, received: 5, retry: "done" }, { sender: "either" });
  assert.equal(c1000.out, "3 + 2 echoes");
  assert.equal(c1000.outEcho, false);
  assert.equal(c1000.in, "5");
  assert.match(c1000.chooser, /echoes are marked/);
  const c1005 = h.codeRow({ code: 1005, name: "No Status Received", sent: 2, received: 2, retry: "depends" }, { sender: "local" });
  assert.match(c1005.chooser, /without a code/);
  const none = h.codeRow({ code: 1010, name: "Mandatory Extension", sent: 0, received: 1, retry: "permanent" }, { sender: "client" });
  assert.equal(none.out, "0");
  assert.equal(none.outEcho, false);
});
