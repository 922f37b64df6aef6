package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ebb-ws/ebb/bench/servers"
)

// ServerStats is what a server process reports about itself on /stats.
type ServerStats struct {
	RSSKiB     int64  `json:"rss_kib"`     // VmRSS
	HWMKiB     int64  `json:"hwm_kib"`     // VmHWM: peak RSS
	HeapInuse  uint64 `json:"heap_inuse"`  // bytes in in-use heap spans
	HeapAlloc  uint64 `json:"heap_alloc"`  // bytes of live heap objects
	StackInuse uint64 `json:"stack_inuse"` // goroutine stacks
	Goroutines int    `json:"goroutines"`  // runtime.NumGoroutine
	Open       int64  `json:"open"`        // WebSocket connections held by the adapter
	CPUNanos   int64  `json:"cpu_ns"`      // user+system CPU since start
	NumGC      uint32 `json:"num_gc"`      // completed GC cycles
	Sys        uint64 `json:"sys"`         // bytes obtained from the OS
	UptimeNs   int64  `json:"uptime_ns"`   // monotonic time since start, read with CPUNanos
}

// started anchors ServerStats.UptimeNs.
var started = time.Now()

// serveMain runs one library's echo server in this process: the driver
// starts it as `bench serve --lib X`. It prints "LISTEN <ws-addr> <stats-addr>"
// on stdout once both listeners are up, then serves until killed.
func serveMain(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	lib := fs.String("lib", "ebb", "library: "+strings.Join(servers.Names, ", "))
	addr := fs.String("addr", "127.0.0.1:0", "WebSocket listen address")
	comp := fs.String("compression", "", "permessage-deflate: '', notakeover, takeover")
	window := fs.Int("window", 0, "server LZ77 window bits for takeover (0: library default)")
	limit := fs.Int("limit", 0, "admission limit on connections (ebb with shed only)")
	hardDemand := fs.Int("hard-demand", 0, "with --limit: shed's hard ceiling on demand (503 instead of 1013 past it)")
	guard := fs.Bool("guard", false, "with --limit: shed's Listener answers 503 in the accept loop past the hard ceiling")
	maxPending := fs.Int("max-pending", 0, "with --guard: bound on accepted, not yet admitted connections")
	memRate := fs.Int("memprofilerate", 0, "runtime.MemProfileRate (1 records every allocation; 0 keeps the default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *memRate > 0 {
		runtime.MemProfileRate = *memRate
	}
	raiseNoFile()
	h, err := servers.New(*lib, servers.Options{Compression: *comp, WindowBits: *window, Limit: *limit,
		HardDemand: *hardDemand, Guard: *guard, MaxPending: *maxPending})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	if lw, ok := h.(servers.ListenerWrapper); ok {
		ln = lw.WrapListener(ln)
	}
	sln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", h)
	smux := http.NewServeMux()
	smux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gc") == "1" {
			// Twice: the first collection moves sync.Pool contents to the
			// victim cache, the second frees them. Pooled buffers are a
			// cache, not what an idle connection holds.
			runtime.GC()
			runtime.GC()
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(readStats())
	})
	smux.HandleFunc("/debug/pprof/", pprof.Index)
	smux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	smux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	smux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go http.Serve(sln, smux)
	fmt.Printf("LISTEN %s %s\n", ln.Addr(), sln.Addr())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

func readStats() ServerStats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := ServerStats{
		HeapInuse:  ms.HeapInuse,
		HeapAlloc:  ms.HeapAlloc,
		StackInuse: ms.StackInuse,
		Sys:        ms.Sys,
		NumGC:      ms.NumGC,
		Goroutines: runtime.NumGoroutine(),
		Open:       servers.Open(),
		CPUNanos:   cpuNanos(),
		UptimeNs:   int64(time.Since(started)),
	}
	s.RSSKiB, s.HWMKiB = procStatus()
	return s
}

// procStatus reads VmRSS and VmHWM (KiB) from /proc/self/status.
func procStatus() (rss, hwm int64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

func cpuNanos() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// raiseNoFile lifts the soft open-file limit to the hard limit: the idle
// and storm measures hold 10 000 sockets on each side.
func raiseNoFile() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	rl.Cur = rl.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
}
