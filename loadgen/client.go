package loadgen

import (
	"fmt"
	"runtime"
	"time"
)

// cpuMeter measures the CPU this process uses while a run goes on.
type cpuMeter struct {
	wall time.Time
	cpu  time.Duration
}

func startCPU() cpuMeter { return cpuMeter{wall: time.Now(), cpu: processCPU()} }

// client describes the client side and says whether it was the
// bottleneck, looking at CPU use and at the errors of every run.
func (m cpuMeter) client(runs []Run, inProcessServer bool) Client {
	wall := time.Since(m.wall)
	soft, hard := fileLimit()
	c := Client{
		CPUs:            runtime.NumCPU(),
		GOMAXPROCS:      runtime.GOMAXPROCS(0),
		FileLimit:       soft,
		FileLimitHard:   hard,
		InProcessServer: inProcessServer,
	}
	if wall > 0 {
		c.CPUCores = roundTo((processCPU()-m.cpu).Seconds()/wall.Seconds(), 3)
	}
	procs := float64(c.GOMAXPROCS)
	if c.CPUCores >= 0.9*procs {
		c.Bottleneck = true
		who := "the client"
		if inProcessServer {
			who = "client and server together (one process)"
		}
		c.Notes = append(c.Notes, fmt.Sprintf("%s used %.2f of %d usable cores (%.0f%%): the figures show the client's limit, not the server's; run the client on another machine or with fewer connections",
			who, c.CPUCores, c.GOMAXPROCS, 100*c.CPUCores/procs))
	} else if c.CPUCores >= 0.9 {
		c.Notes = append(c.Notes, fmt.Sprintf("the client used %.2f cores: on a machine shared with the server, the client takes CPU the server could have used", c.CPUCores))
	}
	for _, rr := range runs {
		for _, er := range rr.Errors {
			switch er.Kind {
			case errKindNoPorts:
				c.Bottleneck = true
				c.Notes = append(c.Notes, fmt.Sprintf("%s failed with EADDRNOTAVAIL: the client ran out of local ports (see net.ipv4.ip_local_port_range, or dial from more source addresses); the client is the bottleneck", plural(int(er.Count), "dial")))
			case errKindNoFiles:
				c.Bottleneck = true
				c.Notes = append(c.Notes, fmt.Sprintf("%s failed for lack of file descriptors (limit %d): raise it with 'ulimit -n'; the client is the bottleneck", plural(int(er.Count), "dial"), soft))
			}
		}
	}
	if inProcessServer {
		c.Notes = append(c.Notes, fmt.Sprintf("client and server ran in one process and shared %s", plural(c.CPUs, "core")))
	}
	return c
}
