package demo

import (
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// fixture is a small, hand-made report of a run with 4 clients and a
// limit of 2 (2 per node in the scale-out chapter): every chapter, mark
// and kind of event, at fixed times, so that the rendered chart and text
// are deterministic.
func fixture() *Report {
	s := func(x float64) time.Duration { return time.Duration(x * float64(time.Second)) }
	r := &Report{
		Crowd: 4, Limit: 2, Pace: 1, Duration: s(17),
		Chapters: []ChapterReport{
			{Name: "overload", Title: "overload → backoff", Start: 0, End: s(5), Finding: &OverloadFinding{
				Crowd: 4, Limit: 2, FirstTry: 2, Refusals: 3, RefusedClients: 2, HintMin: s(1.2), HintMax: s(2.5), DistinctHints: 3,
				BackoffBase: s(1), BackoffCap: s(4),
				Retries: []RetryWaits{{Attempt: 1, Count: 2, Median: s(1.3), Max: s(1.4), Hinted: 2}, {Attempt: 2, Count: 1, Median: s(2.6), Max: s(2.6), Hinted: 1}},
				Waits:   3, Hinted: 3, PeakConnections: 2, Sessions: 4, Duration: s(5),
				Other: map[closecode.Code]int{closecode.AbnormalClosure: 1},
			}},
			{Name: "scale-out", Title: "full node → scale out", Start: s(5), End: s(10), Finding: &ScaleOutFinding{
				Crowd: 4, NodeLimit: 2, FirstTry: 2, Alone: s(2),
				Before:   Refusals{Count: 3, Clients: 2, Reasons: map[string]int{"cluster at capacity": 3}, HintMin: s(1.2), HintMax: s(1.8)},
				After:    Refusals{Count: 1, Clients: 1, Reasons: map[string]int{"node at capacity, cluster has room": 1}, HintMin: s(0.6), HintMax: s(0.6)},
				JoinTook: s(0.04), ShortHint: s(0.5), CheckEvery: s(0.5), CheckRise: 3, Routed: s(0.5), ServedAfter: s(1.4),
				NodeA: 2, NodeB: 2, Other: map[closecode.Code]int{},
			}},
			{Name: "restart", Title: "drain → restart", Start: s(10), End: s(15.5), Finding: &RestartFinding{
				Clients: 4, DrainWindow: s(3), DrainHint: s(5), Drained: 4, DrainSpread: s(2.5), HintMin: s(5.1), HintMax: s(7.2),
				Newcomer: Event{At: s(12), Code: closecode.ServiceRestart, Sender: SentByServer, Client: -1, Who: "a newcomer", Hint: s(5.5)},
				Health:   "503 draining", Early: map[closecode.Code]int{}, DownFor: s(1.5), Back: 4, BackAfter: s(1.5), PeakOpensPer250ms: 2,
			}},
			{Name: "extension", Title: "missing extension", Start: s(15.5), End: s(17), Finding: &MissingExtensionFinding{
				Required: "permessage-deflate", Negotiated: "permessage-deflate", Missing: []string{"permessage-deflate (server did not accept it)"},
				Offered: "permessage-deflate; client_max_window_bits", Error: "websocket: closed with 1010 Mandatory Extension: …",
				ServerReceived: true, ServerEchoed: true, Fix: closecode.Lookup(closecode.MandatoryExtension).Fix,
			}},
		},
		Marks: []Mark{
			{s(7), "join", "B joins"}, {s(7.5), "routed", "balancer → B"}, {s(8.4), "served", "all served"},
			{s(11), "drain", "drain starts"}, {s(13.5), "down", "port closed"}, {s(14), "up", "server up"}, {s(15.5), "back", "all back"},
		},
		Server: ServerCounts{
			Sent:     map[closecode.Code]uint64{closecode.TryAgainLater: 7, closecode.ServiceRestart: 5, closecode.NormalClosure: 8, closecode.MandatoryExtension: 1},
			Received: map[closecode.Code]uint64{closecode.TryAgainLater: 7, closecode.ServiceRestart: 5, closecode.NormalClosure: 8, closecode.MandatoryExtension: 1},
		},
	}
	ev := func(at float64, code closecode.Code, sender Sender, client int, chapter string, hint float64) Event {
		return Event{At: s(at), Code: code, Sender: sender, Client: client, Chapter: chapter, Hint: s(hint)}
	}
	refused := func(at float64, client int, reason string, hint float64) Event {
		e := ev(at, closecode.TryAgainLater, SentByServer, client, "scale-out", hint)
		e.Reason = closecode.FormatRetryHint(reason, e.Hint)
		return e
	}
	r.Events = []Event{
		ev(0.01, closecode.TryAgainLater, SentByServer, 2, "overload", 1.2),
		ev(0.01, closecode.TryAgainLater, SentByServer, 3, "overload", 1.9),
		ev(1.3, closecode.AbnormalClosure, SentLocally, 2, "overload", 0),
		ev(2.0, closecode.TryAgainLater, SentByServer, 3, "overload", 2.5),
		ev(2.5, closecode.NormalClosure, SentByClient, 0, "overload", 0),
		ev(3.0, closecode.NormalClosure, SentByClient, 1, "overload", 0),
		ev(4.2, closecode.NormalClosure, SentByClient, 2, "overload", 0),
		ev(4.9, closecode.NormalClosure, SentByClient, 3, "overload", 0),
		refused(5.01, 2, "cluster at capacity", 1.2),
		refused(5.01, 3, "cluster at capacity", 1.5),
		refused(6.3, 2, "cluster at capacity", 1.8),
		refused(7.3, 3, "node at capacity, cluster has room", 0.6),
		ev(9.9, closecode.NormalClosure, SentByClient, 0, "scale-out", 0),
		ev(9.9, closecode.NormalClosure, SentByClient, 1, "scale-out", 0),
		ev(9.9, closecode.NormalClosure, SentByClient, 2, "scale-out", 0),
		ev(9.9, closecode.NormalClosure, SentByClient, 3, "scale-out", 0),
		ev(11.0, closecode.ServiceRestart, SentByServer, 0, "restart", 5.1),
		ev(11.8, closecode.ServiceRestart, SentByServer, 1, "restart", 6.0),
		{At: s(12), Code: closecode.ServiceRestart, Sender: SentByServer, Client: -1, Who: "a newcomer", Chapter: "restart", Hint: s(5.5)},
		ev(12.7, closecode.ServiceRestart, SentByServer, 2, "restart", 7.2),
		ev(13.5, closecode.ServiceRestart, SentByServer, 3, "restart", 6.4),
		ev(15.4, closecode.NormalClosure, SentByClient, 0, "restart", 0),
		{At: s(16.5), Code: closecode.MandatoryExtension, Sender: SentByClient, Client: -1, Who: "the client requiring permessage-deflate", Chapter: "extension"},
	}
	r.Waits = []Wait{{At: s(0.01), Client: 2, Attempt: 1, Delay: s(1.3), Hinted: true, Chapter: "overload"}}
	// Every 0.5 s: the main server's connections, node A's and node B's
	// (-1: not running), the clients waiting, and whether a server drains.
	samples := []struct {
		main, a, b, waiting int
		draining            bool
	}{
		{2, -1, -1, 2, false}, {2, -1, -1, 2, false}, {2, -1, -1, 1, false}, {1, -1, -1, 1, false}, {2, -1, -1, 1, false},
		{2, -1, -1, 0, false}, {2, -1, -1, 0, false}, {2, -1, -1, 0, false}, {1, -1, -1, 0, false}, {0, -1, -1, 0, false},
		{0, 2, -1, 2, false}, {0, 2, -1, 2, false}, {0, 2, -1, 2, false}, {0, 2, -1, 2, false}, {0, 2, 0, 2, false},
		{0, 2, 0, 1, false}, {0, 2, 1, 1, false}, {0, 2, 2, 0, false}, {0, 2, 2, 0, false}, {0, 2, 2, 0, false},
		{4, -1, -1, 0, false}, {4, -1, -1, 0, false}, {4, -1, -1, 0, true}, {3, -1, -1, 1, true}, {2, -1, -1, 2, true},
		{1, -1, -1, 3, true}, {0, -1, -1, 4, true}, {0, -1, -1, 4, false}, {0, -1, -1, 4, false}, {2, -1, -1, 2, false},
		{4, -1, -1, 0, false}, {0, -1, -1, 0, false}, {0, -1, -1, 0, false}, {0, -1, -1, 0, false},
	}
	for i, x := range samples {
		sm := Sample{At: s(float64(i) * 0.5), Waiting: x.waiting, Draining: x.draining, Servers: map[string]int{"main": x.main}}
		for name, n := range map[string]int{nodeA: x.a, nodeB: x.b} {
			if n >= 0 {
				sm.Servers[name] = n
			}
		}
		for _, n := range sm.Servers {
			sm.Connections += n
		}
		r.Samples = append(r.Samples, sm)
	}
	return r
}
