package demo

import (
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// fixture is a small, hand-made report of a run with 4 clients and a
// limit of 2: every chapter, mark and kind of event, at fixed times, so
// that the rendered chart and text are deterministic.
func fixture() *Report {
	s := func(x float64) time.Duration { return time.Duration(x * float64(time.Second)) }
	r := &Report{
		Crowd: 4, Limit: 2, Pace: 1, Duration: s(12),
		Chapters: []ChapterReport{
			{Name: "overload", Title: "overload → backoff", Start: 0, End: s(5), Finding: &OverloadFinding{
				Crowd: 4, Limit: 2, FirstTry: 2, Refusals: 3, RefusedClients: 2, HintMin: s(1.2), HintMax: s(2.5), DistinctHints: 3,
				BackoffBase: s(1), BackoffCap: s(4),
				Retries: []RetryWaits{{Attempt: 1, Count: 2, Median: s(1.3), Max: s(1.4), Hinted: 2}, {Attempt: 2, Count: 1, Median: s(2.6), Max: s(2.6), Hinted: 1}},
				Waits:   3, Hinted: 3, PeakConnections: 2, Sessions: 4, Duration: s(5),
				Other: map[closecode.Code]int{closecode.AbnormalClosure: 1},
			}},
			{Name: "restart", Title: "drain → restart", Start: s(5), End: s(10.5), Finding: &RestartFinding{
				Clients: 4, DrainWindow: s(3), DrainHint: s(5), Drained: 4, DrainSpread: s(2.5), HintMin: s(5.1), HintMax: s(7.2),
				Newcomer: Event{At: s(7), Code: closecode.ServiceRestart, Sender: SentByServer, Client: -1, Who: "a newcomer", Hint: s(5.5)},
				Health:   "503 draining", Early: map[closecode.Code]int{}, DownFor: s(1.5), Back: 4, BackAfter: s(1.5), PeakOpensPer250ms: 2,
			}},
			{Name: "extension", Title: "missing extension", Start: s(10.5), End: s(12), Finding: &MissingExtensionFinding{
				Required: "permessage-deflate", Negotiated: "permessage-deflate", Missing: []string{"permessage-deflate (server did not accept it)"},
				Offered: "permessage-deflate; client_max_window_bits", Error: "websocket: closed with 1010 Mandatory Extension: …",
				ServerReceived: true, ServerEchoed: true, Fix: closecode.Lookup(closecode.MandatoryExtension).Fix,
			}},
		},
		Marks: []Mark{{s(6), "drain", "drain starts"}, {s(8.5), "down", "port closed"}, {s(9), "up", "server up"}, {s(10.5), "back", "all back"}},
		Server: ServerCounts{
			Sent:     map[closecode.Code]uint64{closecode.TryAgainLater: 3, closecode.ServiceRestart: 5, closecode.NormalClosure: 4, closecode.MandatoryExtension: 1},
			Received: map[closecode.Code]uint64{closecode.TryAgainLater: 3, closecode.ServiceRestart: 5, closecode.NormalClosure: 4, closecode.MandatoryExtension: 1},
		},
	}
	ev := func(at float64, code closecode.Code, sender Sender, client int, chapter string, hint float64) Event {
		return Event{At: s(at), Code: code, Sender: sender, Client: client, Chapter: chapter, Hint: s(hint)}
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
		ev(6.0, closecode.ServiceRestart, SentByServer, 0, "restart", 5.1),
		ev(6.8, closecode.ServiceRestart, SentByServer, 1, "restart", 6.0),
		{At: s(7), Code: closecode.ServiceRestart, Sender: SentByServer, Client: -1, Who: "a newcomer", Chapter: "restart", Hint: s(5.5)},
		ev(7.7, closecode.ServiceRestart, SentByServer, 2, "restart", 7.2),
		ev(8.5, closecode.ServiceRestart, SentByServer, 3, "restart", 6.4),
		ev(10.4, closecode.NormalClosure, SentByClient, 0, "restart", 0),
		{At: s(11.5), Code: closecode.MandatoryExtension, Sender: SentByClient, Client: -1, Who: "the client requiring permessage-deflate", Chapter: "extension"},
	}
	r.Waits = []Wait{{At: s(0.01), Client: 2, Attempt: 1, Delay: s(1.3), Hinted: true, Chapter: "overload"}}
	conns := []int{2, 2, 2, 1, 2, 2, 0, 4, 4, 3, 2, 1, 0, 0, 0, 2, 4, 4, 0, 0}
	waiting := []int{2, 2, 1, 1, 1, 0, 0, 0, 0, 1, 2, 3, 4, 4, 4, 2, 0, 0, 0, 0}
	for i := range conns {
		r.Samples = append(r.Samples, Sample{At: s(float64(i) * 0.6), Connections: conns[i], Waiting: waiting[i], Draining: i >= 10 && i <= 13})
	}
	return r
}
