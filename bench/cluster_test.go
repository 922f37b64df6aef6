package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestCentrifugoConfig(t *testing.T) {
	for _, tc := range []struct {
		redis         string
		broker        bool
		history, eng  bool
		wantRecovered bool
	}{
		{"", true, false, false, false},
		{"127.0.0.1:6379", false, true, true, true},
	} {
		b, err := json.Marshal(centrifugoConfig(8000, "nats://127.0.0.1:4222", tc.redis))
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			HTTP    struct{ Port int } `json:"http_server"`
			Broker  *struct{ Type string }
			Engine  *struct{ Type string }
			Channel struct {
				WithoutNamespace map[string]any `json:"without_namespace"`
			}
			API struct{ Key string } `json:"http_api"`
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatal(err)
		}
		ns := cfg.Channel.WithoutNamespace
		if cfg.HTTP.Port != 8000 || cfg.API.Key == "" || ns["allow_subscribe_for_client"] != true || ns["allow_subscribe_for_anonymous"] != true {
			t.Errorf("redis %q: config %s misses the port, API key or anonymous subscribe", tc.redis, b)
		}
		if (cfg.Broker != nil && cfg.Broker.Type == "nats") != tc.broker {
			t.Errorf("redis %q: NATS broker set = %v, want %v (%s)", tc.redis, cfg.Broker != nil, tc.broker, b)
		}
		if (cfg.Engine != nil && cfg.Engine.Type == "redis") != tc.eng {
			t.Errorf("redis %q: Redis engine set = %v, want %v (%s)", tc.redis, cfg.Engine != nil, tc.eng, b)
		}
		if (ns["force_recovery"] == true && ns["history_size"] != nil) != tc.wantRecovered {
			t.Errorf("redis %q: recovery = %v, want %v (%s)", tc.redis, ns["force_recovery"], tc.wantRecovered, b)
		}
	}
}

func TestKeepEarlier(t *testing.T) {
	dir := t.TempDir()
	old := Report{Date: "D0", Command: "go run . --all", Versions: map[string]string{"gws": "v1"},
		Rows:    []*Row{{Measure: "throughput", Lib: "gws", Case: "x"}, {Measure: "cluster", Lib: "centrifugo", Case: "old"}},
		Cluster: []*ClusterDetail{{System: "centrifugo", Case: "old"}}}
	b, _ := json.Marshal(old)
	path := filepath.Join(dir, "results.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r := Report{Versions: map[string]string{}, Rows: []*Row{{Measure: "cluster", Lib: "centrifugo", Case: "new"}}}
	if err := r.keepEarlier(path, map[string]bool{"cluster": true}); err != nil {
		t.Fatal(err)
	}
	if len(r.Rows) != 2 || r.Rows[0].Measure != "throughput" || r.Rows[1].Case != "new" {
		t.Errorf("rows = %+v, want the old throughput row first, then the new cluster row only", r.Rows)
	}
	if r.Kept["throughput"] != "D0, `go run . --all`" || r.Versions["gws"] != "v1" || len(r.Cluster) != 0 {
		t.Errorf("kept %v versions %v cluster %v", r.Kept, r.Versions, r.Cluster)
	}
	// No earlier file: nothing kept, no error.
	r2 := Report{Versions: map[string]string{}}
	if err := r2.keepEarlier(filepath.Join(dir, "none.json"), map[string]bool{"cluster": true}); err != nil || len(r2.Rows) != 0 {
		t.Errorf("missing file: rows %v err %v", r2.Rows, err)
	}
}
