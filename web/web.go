// Package web holds ebb's browser side: ebb.js, a reconnecting WebSocket
// client written as a plain ES module (no build step) that follows the same
// backoff, retry-hint and close-code rules as the Go package reconnect, and
// closecodes.gen.js, its close-code table generated from package closecode.
// Both are embedded, so the ebb binary can serve them.
//
// With its resume option, ebb.js follows a broadcast across reconnections
// with ebb's resume protocol (the subprotocol "ebb.resume.v1", as
// reconnect.Options.Resume does in Go): it asks each new connection for
// the messages after the last one it delivered, strips their sequence
// numbers, drops duplicates, and reports every gap to the application
// (onGap). testdata/resume_vectors.json holds the test vectors that keep
// its parser and Go's reconnect.ParseResumeMessage in agreement.
package web

//go:generate go run gen.go

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"path"
	"time"
)

// FS holds ebb.js and closecodes.gen.js at its root. ebb.js imports the
// table as "./closecodes.gen.js", so serve both from the same directory.
//
//go:embed ebb.js closecodes.gen.js
var FS embed.FS

//go:embed dashboard.html
var dashboardHTML []byte

// Dashboard serves the live dashboard page of `ebb serve` at "/": current
// connections, admissions against refusals over time, close codes sent and
// received, and a browser client (ebb.js) whose state it shows. The page
// polls /api/stats once a second and imports /ebb.js, so mount it on a server
// that serves both. Other paths get 404.
func Dashboard() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" && r.URL.Path != "/index.html" {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(dashboardHTML))
	})
}

// module is one file Handler serves.
type module struct {
	body []byte
	etag string
}

// modules are the files Handler serves, by request path, read once.
var modules = func() map[string]module {
	m := make(map[string]module)
	for _, name := range []string{"ebb.js", "closecodes.gen.js"} {
		body, err := FS.ReadFile(name)
		if err != nil {
			// Unreachable: go:embed fails the build when a file is missing.
			panic("web: " + name + " is not embedded: " + err.Error())
		}
		sum := sha256.Sum256(body)
		m["/"+name] = module{body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
	}
	return m
}()

// Handler serves /ebb.js and /closecodes.gen.js as JavaScript modules and
// answers 404 for any other path. Mount it at the server's root, or under
// a prefix with http.StripPrefix; pages then load the client with
// `import { Client } from "/ebb.js"`. Responses carry an ETag of the
// content and "Cache-Control: no-cache", so browsers revalidate (cheaply,
// with 304) and never keep running a client older than the server.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m, ok := modules[path.Clean("/"+r.URL.Path)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "web: method "+r.Method+" not allowed: want GET or HEAD", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/javascript; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("ETag", m.etag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(m.body))
	})
}
