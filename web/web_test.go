package web

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/web/internal/closecodejs"
	"github.com/ebb-ws/ebb/websocket"
)

// TestCloseCodesUpToDate fails when closecodes.gen.js no longer matches
// package closecode: someone changed the registry without regenerating.
func TestCloseCodesUpToDate(t *testing.T) {
	t.Parallel()
	want, err := closecodejs.Generate()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("closecodes.gen.js")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("web/closecodes.gen.js is stale: package closecode changed since it was generated; run `go generate ./web` and commit the result")
	}
	embedded, err := FS.ReadFile("closecodes.gen.js")
	if err != nil || !bytes.Equal(embedded, got) {
		t.Fatalf("the embedded closecodes.gen.js differs from the file on disk (err %v)", err)
	}
}

// TestGeneratedTable checks the generated table against the registry
// entry by entry, so that a generator bug cannot hide behind the
// up-to-date check above.
func TestGeneratedTable(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("closecodes.gen.js")
	if err != nil {
		t.Fatal(err)
	}
	text := string(src)
	for _, info := range closecode.All() {
		if info.Range {
			lo, hi := closecode.Range(info.Code + 1)
			if !strings.Contains(text, `{"lo":`+strconv.Itoa(int(lo))+`,"hi":`+strconv.Itoa(int(hi))+`,"name":"`+info.Name+`"`) {
				t.Errorf("range %d–%d %q missing from the table", lo, hi, info.Name)
			}
			continue
		}
		prefix := "  " + strconv.Itoa(int(info.Code)) + `: Object.freeze({"code":` + strconv.Itoa(int(info.Code)) + `,"name":"` + info.Name + `","retryClass":"`
		i := strings.Index(text, prefix)
		if i < 0 {
			t.Errorf("code %d missing from the table", info.Code)
			continue
		}
		line := text[i : i+strings.Index(text[i:], "\n")]
		wantRetries := `"retries":` + boolText(info.Retry.ShouldRetry())
		wantWire := `"onWire":` + boolText(info.OnWire)
		wantSender := `"sender":"` + map[closecode.Sender]string{
			closecode.SenderEither: "either", closecode.SenderClient: "client",
			closecode.SenderServer: "server", closecode.SenderLocal: "local",
		}[info.Sender] + `"`
		if !strings.Contains(line, wantRetries) || !strings.Contains(line, wantWire) || !strings.Contains(line, wantSender) {
			t.Errorf("code %d: %s, want %s, %s and %s", info.Code, line, wantRetries, wantWire, wantSender)
		}
	}
	hint := closecode.FormatRetryHint("", 0)
	if !strings.Contains(text, `export const RETRY_HINT_KEY = "`+strings.TrimSuffix(hint, "0")+`";`) {
		t.Errorf("RETRY_HINT_KEY does not match closecode's hint %q", hint)
	}
	if !strings.Contains(text, "export const MAX_RETRY_HINT_SECONDS = 86400;") {
		t.Error("MAX_RETRY_HINT_SECONDS is not the 86400 s closecode.ParseRetryHint trusts")
	}
}

func boolText(b bool) string { return strconv.FormatBool(b) }

// TestEbbJSImportsOnlyTheTable checks that ebb.js takes the table and the
// hint format from the generated module instead of retyping them, and
// imports only names the module exports.
func TestEbbJSImportsOnlyTheTable(t *testing.T) {
	t.Parallel()
	js, err := os.ReadFile("ebb.js")
	if err != nil {
		t.Fatal(err)
	}
	gen, err := os.ReadFile("closecodes.gen.js")
	if err != nil {
		t.Fatal(err)
	}
	imports := regexp.MustCompile(`(?ms)^import\s*\{([^}]*)\}\s*from\s*"([^"]+)"`).FindAllSubmatch(js, -1)
	if len(imports) != 1 || string(imports[0][2]) != "./closecodes.gen.js" {
		t.Fatalf("ebb.js must import exactly one module, ./closecodes.gen.js; found %q", imports)
	}
	for _, name := range strings.Split(string(imports[0][1]), ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !bytes.Contains(gen, []byte("export const "+name+" = ")) {
			t.Errorf("ebb.js imports %s, which closecodes.gen.js does not export", name)
		}
	}
	// Outside comments, the hint key must not appear: the parser uses
	// RETRY_HINT_KEY.
	key := strings.TrimSuffix(closecode.FormatRetryHint("", 0), "0")
	for i, line := range strings.Split(string(js), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "//") || strings.HasPrefix(trimmed, "*") || strings.HasPrefix(trimmed, "/*") {
			continue
		}
		if strings.Contains(line, key) {
			t.Errorf("ebb.js:%d retypes the hint key %q: use RETRY_HINT_KEY from closecodes.gen.js", i+1, key)
		}
	}
	if !regexp.MustCompile(`lastIndexOf\(RETRY_HINT_KEY\)`).Match(js) {
		t.Error("ebb.js's parseRetryHint does not look for RETRY_HINT_KEY")
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for _, name := range []string{"ebb.js", "closecodes.gen.js"} {
		want, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(srv.URL + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
			t.Fatalf("GET /%s = %d with %d bytes, want 200 with the %d-byte file", name, resp.StatusCode, len(body), len(want))
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/javascript; charset=utf-8" {
			t.Errorf("GET /%s Content-Type = %q, want text/javascript (browsers refuse modules otherwise)", name, ct)
		}
		etag := resp.Header.Get("ETag")
		if etag == "" {
			t.Fatalf("GET /%s has no ETag", name)
		}
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/"+name, nil)
		req.Header.Set("If-None-Match", etag)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("revalidating /%s with its ETag = %d, want 304", name, resp.StatusCode)
		}
	}
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodGet, "/web.go", http.StatusNotFound},
		{http.MethodGet, "/../ebb.js", http.StatusOK},
		{http.MethodHead, "/ebb.js", http.StatusOK},
		{http.MethodPost, "/ebb.js", http.StatusMethodNotAllowed},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
		}
	}
}

// TestEbbJSUnderNode runs ebb_test.mjs, the unit tests of ebb.js's rules,
// when Node is installed. Node is not needed to build or use ebb; without
// it the test is skipped and the Chromium test still covers ebb.js.
func TestEbbJSUnderNode(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH; ebb_test.mjs needs Node 18 or later")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, "--test", "ebb_test.mjs").CombinedOutput()
	if err != nil {
		t.Fatalf("node --test ebb_test.mjs: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("# fail 0")) {
		t.Fatalf("node --test ebb_test.mjs did not report its results:\n%s", out)
	}
}

// TestDashboardImports checks that the dashboard imports only names
// ebb.js exports, and takes the close-code table from it (lookup) rather
// than retyping who sends which code.
func TestDashboardImports(t *testing.T) {
	t.Parallel()
	js, err := os.ReadFile("ebb.js")
	if err != nil {
		t.Fatal(err)
	}
	imports := regexp.MustCompile(`(?m)^import\s*\{([^}]*)\}\s*from\s*"([^"]+)"`).FindAllSubmatch(dashboardHTML, -1)
	if len(imports) != 1 || string(imports[0][2]) != "/ebb.js" {
		t.Fatalf("the dashboard must import exactly one module, /ebb.js; found %q", imports)
	}
	names := map[string]bool{}
	for _, name := range strings.Split(string(imports[0][1]), ",") {
		name = strings.TrimSpace(name)
		names[name] = true
		if !regexp.MustCompile(`export (function|class|const) ` + regexp.QuoteMeta(name) + `\b|export \{[^}]*\b` + regexp.QuoteMeta(name) + `\b`).Match(js) {
			t.Errorf("the dashboard imports %s, which ebb.js does not export", name)
		}
	}
	if !names["lookup"] || !bytes.Contains(dashboardHTML, []byte("codeRow(c, lookup(c.code))")) {
		t.Error("the dashboard's close-code rows do not take the sender from ebb.js's lookup")
	}
	rec := httptest.NewRecorder()
	Dashboard().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), dashboardHTML) {
		t.Errorf("GET / = %d with %d bytes, want the %d-byte dashboard", rec.Code, rec.Body.Len(), len(dashboardHTML))
	}
}

// TestDashboardUnderNode runs dashboard_test.mjs, the unit tests of the
// dashboard's helpers (gridlines, drain shading, close-code rows), when
// Node is installed; without it the test is skipped.
func TestDashboardUnderNode(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH; dashboard_test.mjs needs Node 18 or later")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, "--test", "dashboard_test.mjs").CombinedOutput()
	if err != nil {
		t.Fatalf("node --test dashboard_test.mjs: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("# fail 0")) {
		t.Fatalf("node --test dashboard_test.mjs did not report its results:\n%s", out)
	}
}

// resumeVector is one entry of testdata/resume_vectors.json, which
// ebb_test.mjs checks against ebb.js's parser too: Go and the browser
// client read ebb.resume.v1 the same way.
type resumeVector struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Data  string `json:"data"`
	Error string `json:"error"`
	Want  *struct {
		Kind    string `json:"kind"`
		Seq     uint64 `json:"seq"`
		From    uint64 `json:"from"`
		Next    uint64 `json:"next"`
		Payload string `json:"payload"`
		Word    string `json:"word"`
	} `json:"want"`
}

// bytesOf encodes a vector's data: UTF-8 for text, one byte per code
// point (0–255) for binary.
func bytesOf(t *testing.T, v resumeVector) []byte {
	t.Helper()
	if v.Type == "text" {
		return []byte(v.Data)
	}
	var b []byte
	for _, r := range v.Data {
		if r > 255 {
			t.Fatalf("vector %q: binary data has code point %U > 255", v.Name, r)
		}
		b = append(b, byte(r))
	}
	return b
}

func TestResumeVectorsGo(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("testdata/resume_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Vectors []resumeVector `json:"vectors"`
	}
	if err := json.Unmarshal(src, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) < 20 {
		t.Fatalf("only %d vectors in testdata/resume_vectors.json", len(file.Vectors))
	}
	for _, v := range file.Vectors {
		typ := websocket.MessageText
		if v.Type == "binary" {
			typ = websocket.MessageBinary
		}
		m, err := reconnect.ParseResumeMessage(typ, bytesOf(t, v))
		if v.Want == nil {
			if err == nil || v.Error == "" || !strings.Contains(err.Error(), v.Error) {
				t.Errorf("%s: Go parsed %+v, %v; want an error containing %q", v.Name, m, err, v.Error)
			}
			continue
		}
		w := v.Want
		payload := string(m.Payload)
		if typ == websocket.MessageBinary {
			payload = string(bytesToRunes(m.Payload))
		}
		if err != nil || m.Kind.String() != w.Kind || m.Seq != w.Seq || m.From != w.From || m.Next != w.Next || payload != w.Payload || m.Word != w.Word {
			t.Errorf("%s: Go parsed %+v, %v; want %+v", v.Name, m, err, *w)
		}
	}
}

// bytesToRunes maps each byte to the code point of the same value, the
// vectors' spelling of binary data.
func bytesToRunes(b []byte) []rune {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return r
}
