package frameworks

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMESnippets checks that every snippet in README.md is the code
// between "// [readme NAME]" and "// [readme end]" in NAME/main.go, which
// that directory's test runs: the README shows tested code only.
func TestREADMESnippets(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"chi", "gorilla", "echo", "gin", "grpc"} {
		src, err := os.ReadFile(filepath.Join(name, "main.go"))
		if err != nil {
			t.Fatal(err)
		}
		snip, ok := snippet(string(src), name)
		if !ok {
			t.Errorf("%s/main.go has no [readme %s] ... [readme end] region", name, name)
			continue
		}
		if !strings.Contains(string(readme), "```go\n"+snip+"```\n") {
			t.Errorf("README.md lacks the %s snippet, or it differs from %s/main.go; it should read:\n%s", name, name, snip)
		}
	}
}

// snippet returns the lines of src between "// [readme name]" and
// "// [readme end]".
func snippet(src, name string) (string, bool) {
	begin, end := "// [readme "+name+"]\n", "// [readme end]\n"
	_, rest, ok := strings.Cut(src, begin)
	if !ok {
		return "", false
	}
	code, _, ok := strings.Cut(rest, end)
	if !ok {
		return "", false
	}
	return strings.TrimRight(code, "\n") + "\n", true
}
