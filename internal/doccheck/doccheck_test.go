package doccheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// root is the repository's root, where the main module's go.mod is.
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// pages are the Markdown files held true by these tests, relative to root.
func pages(t *testing.T, dir string) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(dir, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := []string{"README.md"}
	for _, d := range docs {
		out = append(out, filepath.Join("docs", filepath.Base(d)))
	}
	return out
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// block is a fenced code block of a Markdown page.
type block struct {
	lang, text string
	line       int // of the opening fence
}

func blocks(page string) []block {
	var out []block
	var cur *block
	for i, line := range strings.Split(page, "\n") {
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &block{lang: strings.TrimSpace(line[3:]), line: i + 1}
		case cur != nil && strings.TrimSpace(line) == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	return out
}

// imports are the packages a fragment may use by these names; a fragment
// imports those it names.
var imports = map[string]string{
	"context":    "context",
	"errors":     "errors",
	"fmt":        "fmt",
	"io":         "io",
	"log":        "log",
	"slog":       "log/slog",
	"http":       "net/http",
	"os":         "os",
	"time":       "time",
	"redis":      "github.com/redis/go-redis/v9",
	"prometheus": "github.com/prometheus/client_golang/prometheus",
	"promhttp":   "github.com/prometheus/client_golang/prometheus/promhttp",
	"ratelimit":  "github.com/distributed-rate-limiter/ratelimit-go/ratelimit",
	"httplimit":  "github.com/distributed-rate-limiter/ratelimit-go/ratelimit/httplimit",
	"telemetry":  "github.com/distributed-rate-limiter/ratelimit-go/telemetry",
	"prom":       "github.com/distributed-rate-limiter/ratelimit-go/telemetry/prom",
	"rlotel":     "github.com/distributed-rate-limiter/ratelimit-go/telemetry/otel",
}

// givens are what a fragment may use without declaring it, as a reader of
// the page would assume it from the text around it.
const givens = `
var (
	ctx        = context.Background()
	rdb        = redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	limiter    *ratelimit.Limiter
	llm        *ratelimit.Limiter
	apiKey     = "key:alice"
	plan       = "pro"
	maxTokens  int64 = 4000
	usedTokens int64 = 1500
)
`

var topLevel = regexp.MustCompile(`^(func|type) `)

// program turns a Go block into a file of package main: a complete file as
// it is; a fragment's declarations (func, type at column 0) at the top level
// and its statements in a function returning error, with the imports it
// names and the givens.
func program(src string) string {
	if strings.HasPrefix(src, "package ") || strings.Contains(src, "\npackage ") {
		return src
	}
	var decls, body strings.Builder
	lines := strings.Split(src, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case strings.HasPrefix(line, "import ("):
			for i < len(lines) && lines[i] != ")" {
				i++
			}
		case strings.HasPrefix(line, "import "):
		case topLevel.MatchString(line):
			for ; i < len(lines); i++ {
				decls.WriteString(lines[i] + "\n")
				if lines[i] == "}" || (lines[i] == line && !strings.HasSuffix(line, "{")) {
					break
				}
			}
		default:
			body.WriteString("\t" + line + "\n")
		}
	}
	used := decls.String() + body.String() + givens
	var file strings.Builder
	file.WriteString("package main\n\nimport (\n")
	names := make([]string, 0, len(imports))
	for name := range imports {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if regexp.MustCompile(`\b` + name + `\.`).MatchString(used) {
			fmt.Fprintf(&file, "\t%s %q\n", name, imports[name])
		}
	}
	file.WriteString(")\n" + givens + "\n" + decls.String())
	file.WriteString("\nfunc fragment() error {\n" + body.String() + "\treturn nil\n}\n\nfunc main() { _ = fragment() }\n")
	return file.String()
}

// TestGoBlocksCompile builds every Go block of README.md and docs/ against
// the code as it is, each as a package of its own given to go build as an
// overlay (nothing is written into the module).
func TestGoBlocksCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every block with the go command")
	}
	dir := root(t)
	tmp := t.TempDir()
	overlay := map[string]string{}
	var pkgs []string
	where := map[string]string{}
	for _, page := range pages(t, dir) {
		for _, b := range blocks(read(t, filepath.Join(dir, page))) {
			if b.lang != "go" {
				continue
			}
			n := len(pkgs)
			pkg := fmt.Sprintf("./internal/doccheck/block%d", n)
			src := filepath.Join(tmp, fmt.Sprintf("block%d.go", n))
			if err := os.WriteFile(src, []byte(program(b.text)), 0o600); err != nil {
				t.Fatal(err)
			}
			overlay[filepath.Join(dir, "internal", "doccheck", fmt.Sprintf("block%d", n), "main.go")] = src
			pkgs = append(pkgs, pkg)
			where[fmt.Sprintf("block%d", n)] = fmt.Sprintf("%s:%d", page, b.line)
		}
	}
	if len(pkgs) == 0 {
		t.Fatal("no Go block found")
	}
	js, err := json.Marshal(map[string]any{"Replace": overlay})
	if err != nil {
		t.Fatal(err)
	}
	ov := filepath.Join(tmp, "overlay.json")
	if err := os.WriteFile(ov, js, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goTool(t), append([]string{"build", "-overlay", ov}, pkgs...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		// Name the page and line of each failing block.
		msg := regexp.MustCompile(`block\d+`).ReplaceAllStringFunc(string(out), func(s string) string {
			if w, ok := where[s]; ok {
				return s + " (" + w + ")"
			}
			return s
		})
		t.Fatalf("a Go block does not compile:\n%s", msg)
	}
	t.Logf("%d Go blocks compile", len(pkgs))
}

func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		t.Fatal("no go command on PATH or in GOROOT")
	}
	return p
}

// TestQuickStartIsTheExample: the README's quick start is
// examples/quickstart/main.go, byte for byte, so that its test runs what the
// README shows; the README stays a front page (at most 250 lines) and the
// quick start a glance (at most 60).
func TestQuickStartIsTheExample(t *testing.T) {
	dir := root(t)
	want := read(t, filepath.Join(dir, "examples", "quickstart", "main.go"))
	if n := strings.Count(want, "\n"); n > 60 {
		t.Errorf("examples/quickstart/main.go has %d lines, more than 60", n)
	}
	readme := read(t, filepath.Join(dir, "README.md"))
	if n := strings.Count(readme, "\n"); n > 250 {
		t.Errorf("README.md has %d lines, more than 250", n)
	}
	for _, b := range blocks(readme) {
		if b.lang == "go" && strings.HasPrefix(b.text, "// Command quickstart") {
			if b.text != want {
				t.Fatalf("README.md:%d: the quick start differs from examples/quickstart/main.go", b.line)
			}
			return
		}
	}
	t.Fatal("README.md has no Go block starting with // Command quickstart")
}

var (
	link    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	heading = regexp.MustCompile(`(?m)^#{1,6} (.+)$`)
)

// anchor is GitHub's id for a heading: lower case, punctuation but '-' and
// '_' dropped, spaces made '-'.
func anchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func anchors(page string) map[string]bool {
	out := map[string]bool{}
	inCode := false
	for _, line := range strings.Split(page, "\n") {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		if m := heading.FindStringSubmatch(line); m != nil && !inCode {
			out[anchor(m[1])] = true
		}
	}
	return out
}

// TestLinksResolve: every relative link of README.md and docs/ names a file
// or directory that exists, and its #anchor a heading of that page.
func TestLinksResolve(t *testing.T) {
	dir := root(t)
	for _, page := range pages(t, dir) {
		text := read(t, filepath.Join(dir, page))
		for _, m := range link.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, frag, _ := strings.Cut(target, "#")
			path := filepath.Join(dir, page)
			if file != "" {
				path = filepath.Join(filepath.Dir(path), file)
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s: link %s: %v", page, target, err)
				continue
			}
			if frag != "" && strings.HasSuffix(path, ".md") && !anchors(read(t, path))[frag] {
				t.Errorf("%s: link %s: no heading with that anchor", page, target)
			}
		}
	}
}

var testName = regexp.MustCompile("`((?:Test|Benchmark|Example)[A-Z][A-Za-z0-9_]*)")

// TestNamedTestsExist: a test or benchmark the pages cite as evidence exists
// in some _test.go file of the repository (any module).
func TestNamedTestsExist(t *testing.T) {
	dir := root(t)
	defined := map[string]bool{}
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Benchmark|Example)\w+)\(`)
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != dir || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, "_test.go") {
			for _, m := range decl.FindAllStringSubmatch(read(t, path), -1) {
				defined[m[1]] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, page := range append(pages(t, dir), "BENCHMARKS.md") {
		text, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			continue // BENCHMARKS.md is optional
		}
		for _, m := range testName.FindAllStringSubmatch(string(text), -1) {
			if !defined[m[1]] {
				t.Errorf("%s names %s, which no _test.go file defines", page, m[1])
			}
		}
	}
}

// TestCIRunsTheTestCommand: .ci/run runs the README's test command (with
// -race) and makes real-Redis tests fail rather than skip.
func TestCIRunsTheTestCommand(t *testing.T) {
	dir := root(t)
	readme := read(t, filepath.Join(dir, "README.md"))
	for _, cmd := range []string{"go run ./examples/httpserver", "go test ./..."} {
		if !strings.Contains(readme, cmd) {
			t.Errorf("README.md lacks %q", cmd)
		}
	}
	ci := read(t, filepath.Join(dir, ".ci", "run"))
	for _, want := range []string{"go test -race", "./...", "RATELIMIT_REQUIRE_REDIS=1", "apt-get update", "apt-get install -y", "redis-server"} {
		if !strings.Contains(ci, want) {
			t.Errorf(".ci/run lacks %q", want)
		}
	}
	if !bytes.Contains([]byte(ci), []byte("gofmt")) || !strings.Contains(ci, "go vet") {
		t.Error(".ci/run lacks gofmt or go vet")
	}
}

// TestHeadlineIsTheBenchmarks: the figures README.md and docs/performance.md
// quote are the headline bullets of BENCHMARKS.md, which bench/ writes from
// one run; a new run that changes them fails here until they are copied.
func TestHeadlineIsTheBenchmarks(t *testing.T) {
	dir := root(t)
	section := mdSection(t, read(t, filepath.Join(dir, "BENCHMARKS.md")), "BENCHMARKS.md", "## Headline figures")
	var bullets []string
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "- ") {
			bullets = append(bullets, line)
		}
	}
	if len(bullets) == 0 {
		t.Fatal("BENCHMARKS.md's Headline figures section has no bullet")
	}
	for _, page := range []string{"README.md", filepath.Join("docs", "performance.md")} {
		text := read(t, filepath.Join(dir, page))
		for _, b := range bullets {
			if !strings.Contains(text, b+"\n") {
				t.Errorf("%s lacks BENCHMARKS.md's headline line %q", page, b)
			}
		}
	}
}

// TestShardFiguresAreTheBenchmarks: every figure docs/performance.md quotes
// from the sharded-buckets benchmark (its paragraph that begins "Throughput,
// measured by") is in BENCHMARKS.md's section on them, so that a new run with
// other figures fails here until the paragraph is rewritten from it.
func TestShardFiguresAreTheBenchmarks(t *testing.T) {
	dir := root(t)
	section := mdSection(t, read(t, filepath.Join(dir, "BENCHMARKS.md")), "BENCHMARKS.md", "## Hot keys on Redis Cluster")
	para := paragraph(t, read(t, filepath.Join(dir, "docs", "performance.md")), "docs/performance.md", "Throughput, measured by")
	quotesOnly(t, para, section, "BENCHMARKS.md's sharded-buckets section")
	// docs/algorithms.md quotes the ratio too.
	alg := read(t, filepath.Join(dir, "docs", "algorithms.md"))
	ratio := regexp.MustCompile(`3 shards made a hot\s+identity (\d+\.\d+×) as fast as 1`).FindStringSubmatch(alg)
	if ratio == nil {
		t.Fatal("docs/algorithms.md no longer says what 3 shards made of a hot identity; update this test with it")
	}
	if !strings.Contains(para, ratio[1]) {
		t.Errorf("docs/algorithms.md quotes %s for 3 shards, docs/performance.md (from BENCHMARKS.md) does not", ratio[1])
	}
}

// TestLoneCallerFiguresAreTheBenchmarks: the same for the paragraph of
// docs/performance.md on what a lone caller pays, against all of
// BENCHMARKS.md.
func TestLoneCallerFiguresAreTheBenchmarks(t *testing.T) {
	dir := root(t)
	bench := read(t, filepath.Join(dir, "BENCHMARKS.md"))
	para := paragraph(t, read(t, filepath.Join(dir, "docs", "performance.md")), "docs/performance.md", "A lone caller pays for")
	quotesOnly(t, para, bench, "BENCHMARKS.md")
}

// quotesOnly fails t for each figure in para that source lacks. Figures are
// numbers with a thousands comma, a decimal point or a × sign: counts like
// "3 masters" or "64 callers" are the setup, not results.
func quotesOnly(t *testing.T, para, source, sourceName string) {
	t.Helper()
	figure := regexp.MustCompile(`\d{1,3}(,\d{3})+(/s)?|\d+\.\d+( µs|×)?`)
	found := figure.FindAllString(para, -1)
	if len(found) < 3 {
		t.Fatalf("the paragraph quotes %d figures (%q); the pattern or the paragraph changed", len(found), found)
	}
	for _, f := range found {
		if !strings.Contains(source, f) {
			t.Errorf("docs/performance.md quotes %q, which %s does not have", f, sourceName)
		}
	}
}

// mdSection returns the section of text (named name) that begins with the
// heading line prefix heading, up to the next "## " heading.
func mdSection(t *testing.T, text, name, heading string) string {
	t.Helper()
	return excerpt(t, text, name, heading, "\n## ")
}

// paragraph returns the paragraph of text (named name) that begins with
// begin, up to the next blank line.
func paragraph(t *testing.T, text, name, begin string) string {
	t.Helper()
	return excerpt(t, text, name, begin, "\n\n")
}

// excerpt returns text from the first begin up to the next end after it
// (or to the end of text), and fails t when text has no begin.
func excerpt(t *testing.T, text, name, begin, end string) string {
	t.Helper()
	p := strings.Index(text, begin)
	if p < 0 {
		t.Fatalf("%s has no %q", name, begin)
	}
	out := text[p:]
	if e := strings.Index(out[len(begin):], end); e >= 0 {
		out = out[:len(begin)+e]
	}
	return out
}
