package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// peer is an implementation of WebSocket that no one here wrote, driven
// through the scripts in node/ and python/ (protocol in README.md).
type peer struct {
	name    string // short name used in test names: "node", "python"
	label   string // for the table, with the version: "Node ws 8.23.0"
	install string // how to get it, shown when it is missing

	once    sync.Once
	err     error // why the peer cannot run, or nil
	argv    func(role string) []string
	version func() (string, error)
}

// pythonPath is Debian's interpreter: python3-websockets is installed for it,
// not for whatever python3 comes first on PATH (pyenv, venvs).
const pythonPath = "/usr/bin/python3"

var peers = []*peer{
	{
		name:    "node",
		install: "install Node.js (apt-get install nodejs npm) and run `npm ci` in interop/",
		argv: func(role string) []string {
			return []string{"node", filepath.Join("node", role+".js")}
		},
		version: func() (string, error) {
			if _, err := exec.LookPath("node"); err != nil {
				return "", fmt.Errorf("node is not on PATH: %w", err)
			}
			b, err := os.ReadFile(filepath.Join("node_modules", "ws", "package.json"))
			if err != nil {
				return "", fmt.Errorf("the ws package is not installed: %w", err)
			}
			var pkg struct{ Version string }
			if err := json.Unmarshal(b, &pkg); err != nil {
				return "", fmt.Errorf("node_modules/ws/package.json: %w", err)
			}
			return "Node ws " + pkg.Version, nil
		},
	},
	{
		name:    "python",
		install: "install Debian's python3-websockets (apt-get install python3-websockets); the scripts run with " + pythonPath,
		argv: func(role string) []string {
			return []string{pythonPath, filepath.Join("python", role+".py")}
		},
		version: func() (string, error) {
			out, err := exec.Command(pythonPath, "-c", "import websockets; print(websockets.__version__)").CombinedOutput()
			if err != nil {
				return "", fmt.Errorf("%s cannot import websockets: %v: %s", pythonPath, err, bytes.TrimSpace(out))
			}
			return "Python websockets " + strings.TrimSpace(string(out)), nil
		},
	},
}

// requirePeer returns the named peer, or skips the test with a message that
// says how to install it. Under CI (CI=true) a missing peer fails the test
// instead: CI must run every interop test.
func requirePeer(t *testing.T, name string) *peer {
	t.Helper()
	var p *peer
	for _, q := range peers {
		if q.name == name {
			p = q
		}
	}
	if p == nil {
		t.Fatalf("interop: no peer named %q", name)
	}
	p.once.Do(func() { p.label, p.err = p.version() })
	if p.err != nil {
		msg := fmt.Sprintf("interop: peer %s is not available (%v): %s", name, p.err, p.install)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		noteMissing(p)
		t.Skip(msg)
	}
	return p
}

// missing counts the tests skipped for each missing peer, for the one-line
// notice TestMain prints at the end.
var missing = struct {
	sync.Mutex
	skips map[*peer]int
}{skips: map[*peer]int{}}

func noteMissing(p *peer) {
	missing.Lock()
	missing.skips[p]++
	missing.Unlock()
}

// missingNotice says, in one line, which peers were missing and how to
// install them, or "" when none was.
func missingNotice() string {
	missing.Lock()
	defer missing.Unlock()
	if len(missing.skips) == 0 {
		return ""
	}
	n := 0
	var parts []string
	for p, k := range missing.skips {
		n += k
		parts = append(parts, fmt.Sprintf("%s (%s)", p.name, p.install))
	}
	sort.Strings(parts)
	return fmt.Sprintf("interop: %d tests skipped, peers missing: %s", n, strings.Join(parts, "; "))
}

// tellMissing prints the notice where a person will see it. go test shows
// a passing package's output only with -v, so without it the line also
// goes to the terminal, when there is one (an interactive run; CI fails
// on a missing peer instead).
func tellMissing() {
	msg := missingNotice()
	if msg == "" {
		return
	}
	fmt.Fprintln(os.Stderr, msg)
	if testing.Verbose() {
		return
	}
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		fmt.Fprintln(tty, msg)
		tty.Close()
	}
}

// event is one JSON line reported by a peer script.
type event struct {
	Event       string   `json:"event"`
	Port        int      `json:"port"`
	Type        string   `json:"type"`
	Size        int      `json:"size"`
	SHA256      string   `json:"sha256"`
	Code        int      `json:"code"`
	Reason      string   `json:"reason"`
	Subprotocol string   `json:"subprotocol"`
	Extensions  string   `json:"extensions"`
	Offered     string   `json:"offered"`
	Data        string   `json:"data"`
	Error       string   `json:"error"`
	Status      int      `json:"status"`
	Missing     []string `json:"missing"`
}

// scenario is what a peer script runs (see README.md).
type scenario struct {
	URL          string   `json:"url,omitempty"`
	Subprotocols []string `json:"subprotocols,omitempty"`
	Compression  *deflate `json:"compression,omitempty"`
	Require      []string `json:"require,omitempty"`
	Steps        []step   `json:"steps,omitempty"`
	Timeout      int      `json:"timeout,omitempty"`
}

// deflate holds permessage-deflate parameters; the zero value offers or
// accepts the peer's defaults.
type deflate struct {
	ServerNoContextTakeover bool `json:"server_no_context_takeover,omitempty"`
	ClientNoContextTakeover bool `json:"client_no_context_takeover,omitempty"`
	ServerMaxWindowBits     int  `json:"server_max_window_bits,omitempty"`
	ClientMaxWindowBits     int  `json:"client_max_window_bits,omitempty"`
}

type step struct {
	Op       string `json:"op"`
	Type     string `json:"type,omitempty"`
	Size     int    `json:"size"`
	Fragment int    `json:"fragment,omitempty"`
	Code     int    `json:"code"`
	Reason   string `json:"reason,omitempty"`
	Data     string `json:"data,omitempty"`
	Count    int    `json:"count,omitempty"`
}

// peerProc is a running peer script.
type peerProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr bytes.Buffer
	events chan event
	done   chan struct{} // closed when stdout is drained and the process exited
	werr   error

	mu  sync.Mutex
	all []event
}

// peerDeadline bounds one peer run; scenarios finish in well under it.
const peerDeadline = 90 * time.Second

// start runs the peer in the given role ("client" or "server") with sc.
// The process is killed when the test ends.
func (p *peer) start(t *testing.T, role string, sc scenario) *peerProc {
	t.Helper()
	if sc.Timeout == 0 {
		sc.Timeout = int(peerDeadline / time.Second)
	}
	js, err := json.Marshal(sc)
	if err != nil {
		t.Fatalf("interop: encoding scenario: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), peerDeadline)
	argv := append(p.argv(role), string(js))
	pp := &peerProc{t: t, cmd: exec.CommandContext(ctx, argv[0], argv[1:]...), events: make(chan event, 1024), done: make(chan struct{})}
	pp.cmd.Stderr = &pp.stderr
	out, err := pp.cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatalf("interop: %v", err)
	}
	if err := pp.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("interop: starting %s %s: %v", p.name, role, err)
	}
	go func() {
		defer close(pp.done)
		defer close(pp.events)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = event{Event: "error", Error: fmt.Sprintf("unparsable line %q: %v", sc.Text(), err)}
			}
			pp.mu.Lock()
			pp.all = append(pp.all, ev)
			pp.mu.Unlock()
			select {
			case pp.events <- ev:
			default: // nobody waits for live events; they stay in all.
			}
		}
		pp.werr = pp.cmd.Wait()
	}()
	t.Cleanup(func() {
		cancel()
		<-pp.done
	})
	return pp
}

// listening waits for a server peer's port.
func (pp *peerProc) listening() int {
	pp.t.Helper()
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-pp.events:
			if !ok {
				pp.t.Fatalf("interop: peer server exited before listening: %v\nstderr:\n%s", pp.werr, pp.stderr.String())
			}
			if ev.Event == "listening" {
				return ev.Port
			}
		case <-timer.C:
			pp.t.Fatalf("interop: peer server did not report a port within 15s\nstderr:\n%s", pp.stderr.String())
		}
	}
}

// wait waits for the peer to exit and returns every event it reported. A
// peer that exited with an error fails the test.
func (pp *peerProc) wait() []event {
	pp.t.Helper()
	evs, err := pp.waitExit()
	if err != nil {
		pp.t.Errorf("interop: peer exited with %v\nevents: %+v\nstderr:\n%s", err, evs, pp.stderr.String())
	}
	return evs
}

// waitExit waits for the peer to exit and returns its events and exit error.
func (pp *peerProc) waitExit() ([]event, error) {
	pp.t.Helper()
	select {
	case <-pp.done:
	case <-time.After(peerDeadline):
		pp.t.Fatalf("interop: peer did not exit within %s\nstderr:\n%s", peerDeadline, pp.stderr.String())
	}
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.all, pp.werr
}

// find returns the events of the given kind.
func find(evs []event, kind string) []event {
	var out []event
	for _, ev := range evs {
		if ev.Event == kind {
			out = append(out, ev)
		}
	}
	return out
}

// one returns the single event of the given kind or fails the test.
func one(t *testing.T, evs []event, kind string) event {
	t.Helper()
	got := find(evs, kind)
	if len(got) != 1 {
		t.Fatalf("interop: want exactly one %q event from the peer, got %d; all events: %+v", kind, len(got), evs)
	}
	return got[0]
}

// noErrors fails the test if the peer reported errors.
func noErrors(t *testing.T, evs []event) {
	t.Helper()
	for _, ev := range find(evs, "error") {
		t.Errorf("interop: peer reported an error: %s", ev.Error)
	}
}

// textUnit is repeated to make text payloads; it holds a 3-byte rune so
// that fragments can split a UTF-8 sequence.
var textUnit = []byte("ebb-ws-\u20ac-")

// payloads caches payload results: the same sizes recur in many scenarios
// and generating 16 MiB byte by byte is slow under -race.
var payloads sync.Map // payloadKey → []byte

type payloadKey struct {
	typ  string
	size int
}

// payload returns the deterministic message the peer scripts also compute.
// The slice is shared: callers must not modify it.
func payload(typ string, size int) []byte {
	k := payloadKey{typ, size}
	if b, ok := payloads.Load(k); ok {
		return b.([]byte)
	}
	b, _ := payloads.LoadOrStore(k, makePayload(typ, size))
	return b.([]byte)
}

func makePayload(typ string, size int) []byte {
	b := make([]byte, size)
	if typ == "binary" {
		for i := range b {
			b[i] = byte(i % 251)
		}
		return b
	}
	for i := range b {
		b[i] = textUnit[i%len(textUnit)]
	}
	// Do not end inside the 3-byte rune: replace a cut sequence with dots.
	if size >= 1 && b[size-1] == 0xe2 {
		b[size-1] = '.'
	}
	if size >= 2 && b[size-2] == 0xe2 && b[size-1] == 0x82 {
		b[size-2], b[size-1] = '.', '.'
	}
	return b
}

func sum(p []byte) string {
	h := sha256.Sum256(p)
	return hex.EncodeToString(h[:])
}
