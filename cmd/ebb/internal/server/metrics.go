package server

import (
	"fmt"
	"io"
	"runtime"
	"runtime/metrics"
	"sort"
)

// WriteRuntimeMetrics appends the server process's own memory and goroutine
// gauges to /metrics, so `ebb bench idle` can report memory per connection
// from the server's side.
func WriteRuntimeMetrics(w io.Writer) {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/sched/goroutines:goroutines"},
	}
	metrics.Read(samples)
	value := func(i int) uint64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return samples[i].Value.Uint64()
	}
	fmt.Fprintf(w, "# HELP ebb_process_heap_objects_bytes Bytes of live and not yet swept heap objects (runtime/metrics).\n# TYPE ebb_process_heap_objects_bytes gauge\nebb_process_heap_objects_bytes %d\n", value(0))
	fmt.Fprintf(w, "# HELP ebb_process_stacks_bytes Bytes of goroutine stacks.\n# TYPE ebb_process_stacks_bytes gauge\nebb_process_stacks_bytes %d\n", value(1))
	fmt.Fprintf(w, "# HELP ebb_process_memory_total_bytes All memory mapped by the Go runtime.\n# TYPE ebb_process_memory_total_bytes gauge\nebb_process_memory_total_bytes %d\n", value(2))
	fmt.Fprintf(w, "# HELP ebb_process_goroutines Goroutines alive.\n# TYPE ebb_process_goroutines gauge\nebb_process_goroutines %d\n", max(value(3), uint64(runtime.NumGoroutine())))
}

func sortCodes(c []codeCountJS) {
	sort.Slice(c, func(i, j int) bool { return c[i].Code < c[j].Code })
}
