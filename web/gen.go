//go:build ignore

// gen writes closecodes.gen.js from package closecode. Run it with
// `go generate ./web`.
package main

import (
	"log"
	"os"

	"github.com/ebb-ws/ebb/web/internal/closecodejs"
)

func main() {
	src, err := closecodejs.Generate()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile("closecodes.gen.js", src, 0o644); err != nil {
		log.Fatal(err)
	}
}
