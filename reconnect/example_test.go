package reconnect_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/websocket"
)

// The default backoff: nominal delays double from 1 s up to the 30 s cap,
// and each delay is drawn from the upper half of its nominal value.
func ExampleBackoff() {
	var b reconnect.Backoff
	for n := range 7 {
		lo, hi := b.Window(n, 0)
		fmt.Printf("attempt %d: nominal %v, delay in [%v, %v)\n", n, b.Nominal(n), lo, hi)
	}
	// Output:
	// attempt 0: nominal 1s, delay in [500ms, 1s)
	// attempt 1: nominal 2s, delay in [1s, 2s)
	// attempt 2: nominal 4s, delay in [2s, 4s)
	// attempt 3: nominal 8s, delay in [4s, 8s)
	// attempt 4: nominal 16s, delay in [8s, 16s)
	// attempt 5: nominal 30s, delay in [15s, 30s)
	// attempt 6: nominal 30s, delay in [15s, 30s)
}

// The policy on its own, for a program that uses another WebSocket
// library: feed it the close code and reason that library reported, and
// let a Schedule count attempts and compute the delay.
func ExamplePolicy_Decide() {
	p := reconnect.Policy{
		// The application's own codes: 4000–4099 mean "come back later".
		Application: func(code closecode.Code, reason string) bool { return code < 4100 },
	}
	for _, c := range []struct {
		code   closecode.Code
		reason string
	}{
		{1013, "server at capacity; retry-after=4.5"},
		{1008, "token revoked"},
		{4001, "maintenance"},
		{4403, "not allowed"},
	} {
		d := p.Decide(c.code, c.reason)
		fmt.Printf("%v: retry=%v hint=%v\n", c.code, d.Retry, d.Hint)
	}

	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := reconnect.NewSchedule(p, nil, start)
	w, err := s.Next(start, p.Decide(1013, "server at capacity; retry-after=4.5"))
	fmt.Println(w.Attempt, w.Delay >= 4500*time.Millisecond, w.Hinted, err)
	// Output:
	// 1013 Try Again Later: retry=true hint=4.5s
	// 1008 Policy Violation: retry=false hint=0s
	// 4001 Private Use: retry=true hint=0s
	// 4403 Private Use: retry=false hint=0s
	// 1 true true <nil>
}

func ExampleDial() {
	// A server that is full for the first client's first try.
	var tries atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		if tries.Add(1) == 1 {
			c.Close(closecode.TryAgainLater, closecode.FormatRetryHint("full", 50*time.Millisecond))
			return
		}
		c.Write(context.Background(), websocket.MessageText, []byte("welcome"))
		typ, p, err := c.Read(context.Background())
		if err == nil {
			c.Write(context.Background(), typ, []byte(strings.ToUpper(string(p))))
		}
		c.Close(closecode.NormalClosure, "")
	}))
	defer srv.Close()

	ctx := context.Background()
	client, err := reconnect.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &reconnect.Options{
		Policy: reconnect.Policy{Backoff: reconnect.Backoff{Base: 10 * time.Millisecond}},
		OnEvent: func(e reconnect.Event) {
			if e.State == reconnect.StateClosed && e.Code == closecode.TryAgainLater {
				fmt.Println("closed:", e.Code, e.Reason)
			}
			if e.State == reconnect.StateWaiting {
				fmt.Println("waiting at least the hint:", e.Delay >= 50*time.Millisecond)
			}
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// The first message comes from the second connection: the first one
	// was refused.
	_, p, err := client.Read(ctx)
	fmt.Println(string(p), err)
	if err := client.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		fmt.Println(err)
	}
	_, p, err = client.Read(ctx)
	fmt.Println(string(p), err)
	<-client.Done() // the server ended with 1000: done
	fmt.Println(client.Err() != nil)
	// Output:
	// closed: 1013 Try Again Later full; retry-after=0.1
	// waiting at least the hint: true
	// welcome <nil>
	// HELLO <nil>
	// true
}

// The codec of the resume protocol, as a server uses it to frame a
// broadcast and a client (on any WebSocket library) to read it.
func ExampleParseResumeMessage() {
	for _, p := range [][]byte{
		reconnect.AppendResumeData(nil, 41, []byte("price=12")),
		reconnect.AppendResumeGap(nil, 42, 50),
		reconnect.AppendResumeLive(nil, 51),
		[]byte("!later 1"), // a control of a later version: ignored
		[]byte("041\nprice=13"),
	} {
		m, err := reconnect.ParseResumeMessage(websocket.MessageText, p)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%q → %v seq=%d from=%d next=%d payload=%q\n", p, m.Kind, m.Seq, m.From, m.Next, m.Payload)
	}
	// Output:
	// "41\nprice=12" → data seq=41 from=0 next=0 payload="price=12"
	// "!gap 42 50" → gap seq=0 from=42 next=50 payload=""
	// "!live 51" → live seq=0 from=0 next=51 payload=""
	// "!later 1" → other seq=0 from=0 next=0 payload=""
	// reconnect: malformed ebb.resume.v1 message (text "041\nprice=13"): sequence "041": leading zero
}
