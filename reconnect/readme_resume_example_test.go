package reconnect_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/websocket"
)

// readmeResume is the README's resuming-client snippet: it follows a
// broadcast across reconnections, and is told about every gap.
func readmeResume(ctx context.Context, url string) error {
	// README:begin
	client, err := reconnect.Dial(ctx, url, &reconnect.Options{
		Resume: &reconnect.ResumeOptions{}, // offer ebb.resume.v1; reconnect with from=<last seen + 1>
	})
	if err != nil {
		return err
	}
	defer client.Close(closecode.NormalClosure, "bye")
	for {
		_, msg, err := client.Read(ctx)
		var gap *reconnect.GapError
		if errors.As(err, &gap) {
			fmt.Println("told:", gap) // never silent; reading goes on after a gap
			continue
		}
		if err != nil {
			return err // the client stopped: err says why
		}
		fmt.Printf("#%d %s\n", client.LastSeq(), msg)
	}
	// README:end
}

// The README's snippet against a broadcast server that restarts (1012)
// after two messages. While the client is away, messages 3 and 4 leave the
// server's history and 5 is published: the new connection asks from=3,
// the server answers that 3–4 are gone and sends 5, then ends the feed.
func Example_resume() {
	opts := &websocket.AcceptOptions{Subprotocols: []string{reconnect.ResumeSubprotocol}}
	first := websocket.Handler(opts, func(ctx context.Context, c *websocket.Conn) {
		c.Write(ctx, websocket.MessageText, reconnect.AppendResumeLive(nil, 1))
		c.Write(ctx, websocket.MessageText, reconnect.AppendResumeData(nil, 1, []byte("hello")))
		c.Write(ctx, websocket.MessageText, reconnect.AppendResumeData(nil, 2, []byte("world")))
		c.Close(closecode.ServiceRestart, closecode.FormatRetryHint("restarting", 10*time.Millisecond))
	})
	again := websocket.Handler(opts, func(ctx context.Context, c *websocket.Conn) {
		c.Write(ctx, websocket.MessageText, reconnect.AppendResumeGap(nil, 3, 5))
		c.Write(ctx, websocket.MessageText, reconnect.AppendResumeData(nil, 5, []byte("again")))
		c.Write(ctx, websocket.MessageText, reconnect.AppendResumeLive(nil, 6))
		c.Close(closecode.NormalClosure, "end of the feed")
	})
	asked := make(chan string, 2) // the from parameter of each connection
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from := r.URL.Query().Get(reconnect.ResumeFromParam)
		asked <- from
		if from == "" {
			first.ServeHTTP(w, r)
		} else {
			again.ServeHTTP(w, r)
		}
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := readmeResume(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"))
	fmt.Println("stopped after the server's 1000:", strings.Contains(err.Error(), "1000 Normal Closure"))
	fmt.Printf("from= of each connection: %q %q\n", <-asked, <-asked)
	// Output:
	// #1 hello
	// #2 world
	// told: reconnect: messages 3–4 (2) are lost (no longer in the server's history); delivery continues with 5
	// #5 again
	// stopped after the server's 1000: true
	// from= of each connection: "" "3"
}
