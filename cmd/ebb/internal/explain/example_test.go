package explain_test

import (
	"fmt"

	"github.com/ebb-ws/ebb/cmd/ebb/internal/explain"
)

func ExampleParseCode() {
	for _, s := range []string{"1013", "try-again-later", "70000"} {
		c, err := explain.ParseCode(s)
		if err != nil {
			fmt.Printf("%s: not a close code\n", s)
			continue
		}
		fmt.Println(c, "—", explain.Summary(c))
	}
	// Output:
	// 1013 Try Again Later — The server is up but temporarily cannot serve this client: it is overloaded or throttling.
	// 1013 Try Again Later — The server is up but temporarily cannot serve this client: it is overloaded or throttling.
	// 70000: not a close code
}
