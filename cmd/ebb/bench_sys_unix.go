//go:build unix

package main

import "syscall"

// fdReserve is what a bench process needs besides its connections:
// standard streams, the Go runtime's poller, DNS, the plot file.
const fdReserve = 64

// checkFileLimit makes room for fds file descriptors plus a reserve. Go
// already raises the soft limit to the hard one at start on Linux; when
// that is still too low, a privileged process may raise the hard limit
// too. It fails with what to do when the limit cannot be raised enough.
func checkFileLimit(fds int) error {
	need := uint64(fds + fdReserve)
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return nil // unknown limit: let the dials report EMFILE if it bites
	}
	if uint64(rl.Cur) >= need {
		return nil
	}
	want := rl
	want.Cur = need
	want.Max = max(want.Max, need)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return nil
	}
	if uint64(rl.Max) >= need {
		want.Max = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
			return nil
		}
	}
	return usagef("%s need about %d file descriptors, but the open-file limit is %d (hard limit %d) and cannot be raised by this process; raise it with 'ulimit -n %d' (as root for the hard limit) or use fewer connections",
		plural(fds, "connection"), need, uint64(rl.Cur), uint64(rl.Max), need)
}
