package demo

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// liveLine writes progress: on a terminal one status line rewritten in
// place, elsewhere whole lines (chapter changes, and a status every few
// seconds) so that a log stays readable.
type liveLine struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	last    time.Time
	shown   bool // a status line is on screen (tty)
	stopped bool
}

// nonTTYEvery is how often a status line is printed when not on a terminal.
const nonTTYEvery = 3 * time.Second

func newLiveLine(w io.Writer, tty bool) *liveLine { return &liveLine{w: w, tty: tty} }

// clearLocked removes the status line from the terminal.
func (l *liveLine) clearLocked() {
	if l.tty && l.shown {
		fmt.Fprint(l.w, "\r\033[K")
		l.shown = false
	}
}

// printf prints a line of its own (above the status line).
func (l *liveLine) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clearLocked()
	fmt.Fprintf(l.w, format, args...)
}

// phase announces a chapter.
func (l *liveLine) phase(name string) { l.printf("== %s\n", name) }

// update shows the status.
func (l *liveLine) update(status string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	if l.tty {
		fmt.Fprintf(l.w, "\r\033[K   %s", status)
		l.shown = true
		return
	}
	if time.Since(l.last) >= nonTTYEvery {
		fmt.Fprintf(l.w, "   %s\n", status)
		l.last = time.Now()
	}
}

// stop clears the status line for good.
func (l *liveLine) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clearLocked()
	l.stopped = true
}
