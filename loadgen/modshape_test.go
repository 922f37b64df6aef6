package loadgen

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestModuleRequirements keeps the module light for its importers: the
// library and the HDR histogram, nothing else (no CLI, no plotting).
func TestModuleRequirements(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	var direct, indirect []string
	inBlock := false
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		switch {
		case line == "require (":
			inBlock = true
			continue
		case inBlock && line == ")":
			inBlock = false
			continue
		case strings.HasPrefix(line, "require "):
			line = strings.TrimPrefix(line, "require ")
		case !inBlock:
			continue
		}
		if fields := strings.Fields(line); len(fields) >= 2 {
			if strings.HasSuffix(line, "// indirect") {
				indirect = append(indirect, fields[0])
			} else {
				direct = append(direct, fields[0])
			}
		}
	}
	slices.Sort(direct)
	if want := []string{"github.com/HdrHistogram/hdrhistogram-go", "github.com/ebb-ws/ebb"}; !slices.Equal(direct, want) {
		t.Errorf("go.mod requires %v, want %v only", direct, want)
	}
	if want := []string{"github.com/klauspost/compress"}; !slices.Equal(indirect, want) {
		t.Errorf("go.mod requires %v indirectly, want %v only (the library's one dependency)", indirect, want)
	}
}
