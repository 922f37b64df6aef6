package session

import (
	"bufio"
	"io"
	"strings"
)

// startLines reads r line by line in the background: each line (without
// its line ending) arrives on lines, then nil (at EOF) or the read error
// on done. stop ends it early.
func startLines(r io.Reader) (lines <-chan string, done <-chan error, stop func()) {
	l := make(chan string)
	d := make(chan error, 1)
	s := make(chan struct{})
	go readLines(r, l, d, s)
	return l, d, func() { close(s) }
}

func readLines(r io.Reader, lines chan<- string, done chan<- error, stop <-chan struct{}) {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if len(line) > 0 && (err == nil || err == io.EOF) {
			select {
			case lines <- strings.TrimRight(line, "\r\n"):
			case <-stop:
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			select {
			case done <- err:
			case <-stop:
			}
			return
		}
	}
}
