package main

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// TestConfigErrors: each bad file is refused with an error naming the
// file, the line and the field.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"no domain", "descriptors: []\n", ":1: domain: missing"},
		{"bad domain", "domain: a:b\n", ":1: domain: \"a:b\" has ':'"},
		{"unknown field", "domain: d\ndescriptors:\n  - key: k\n    rate_limt: {}\n", ":4: descriptors[0].rate_limt: unknown field"},
		{"unknown unit", "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: fortnight\n      requests_per_unit: 1\n", ":5: descriptors[0].rate_limit.unit: unknown unit"},
		{"missing unit", "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      requests_per_unit: 1\n", ":5: descriptors[0].rate_limit.unit: missing"},
		{"unlimited with unit", "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unlimited: true\n      unit: second\n", ":6: descriptors[0].rate_limit.unit: an unlimited rate_limit takes no unit"},
		{"negative rpu", "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: -1\n", ":6: descriptors[0].rate_limit.requests_per_unit: want a whole number"},
		{"empty key", "domain: d\ndescriptors:\n  - key: \"\"\n", ":3: descriptors[0].key: empty"},
		{"duplicate", "domain: d\ndescriptors:\n  - key: k\n  - key: k\n", ":4: descriptors[1].key: duplicate descriptor \"k\""},
		{"nested error", "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: b\n        rate_limit: {unit: minute, requests_per_unit: x}\n", ":6: descriptors[0].descriptors[0].rate_limit.requests_per_unit: want a whole number"},
		{"self replace", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {name: n, unit: second, requests_per_unit: 1, replaces: [{name: n}]}\n", "replaces[0].name: a limit cannot replace itself"},
		{"burst on fixed window", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, burst: 5}\n", "rate_limit.burst: only the token_bucket algorithm"},
		{"bad fail mode", "domain: d\nfail_mode: maybe\n", ":2: fail_mode: want open or closed"},
		{"bad algorithm", "domain: d\nalgorithm: leaky\n", ":2: algorithm: unknown algorithm \"leaky\""},
		{"yaml syntax", "domain: d\ndescriptors:\n  - key: [\n", "YAML:"},
		{"quota_mode", "domain: d\ndescriptors:\n  - key: k\n    quota_mode: true\n", ":4: descriptors[0].quota_mode: not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeConfig(t, map[string]string{"c.yaml": tc.yaml})
			_, err := LoadConfig(dir)
			if err == nil {
				t.Fatal("loaded")
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.File != filepath.Join(dir, "c.yaml") {
				t.Fatalf("%v: not a *ConfigError naming the file", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
		})
	}
	dir := writeConfig(t, map[string]string{"a.yaml": "domain: d\n", "b.yml": "domain: d\n"})
	if _, err := LoadConfig(dir); err == nil || !strings.Contains(err.Error(), `domain "d" is also defined in`) {
		t.Fatalf("duplicate domain across files: %v", err)
	}
}

// TestMatch: envoyproxy/ratelimit's matching: an exact value first, then a
// wildcard, then the key alone; the rule applies only at the descriptor's
// last entry.
func TestMatch(t *testing.T) {
	dir := writeConfig(t, map[string]string{"c.yaml": `
domain: d
algorithm: token_bucket
descriptors:
  - key: path
    value: /exact
    rate_limit: {name: exact, unit: second, requests_per_unit: 1}
  - key: path
    value: /api/*
    share_threshold: true
    rate_limit: {name: wild, unit: second, requests_per_unit: 2}
  - key: path
    rate_limit: {name: any, unit: second, requests_per_unit: 3}
  - key: org
    descriptors:
      - key: user
        rate_limit: {name: user, unit: minute, requests_per_unit: 4, algorithm: sliding_window}
`})
	cfg, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Domains["d"]
	name := func(kv ...string) string {
		var es []Entry
		for i := 0; i < len(kv); i += 2 {
			es = append(es, Entry{kv[i], kv[i+1]})
		}
		r, _ := d.Match(es)
		if r == nil {
			return ""
		}
		return r.Name
	}
	for _, tc := range []struct {
		got, want string
	}{
		{name("path", "/exact"), "exact"},
		{name("path", "/api/v1"), "wild"},
		{name("path", "/other"), "any"},
		{name("org", "o", "user", "u"), "user"},
		{name("org", "o"), ""},                            // no rule at that depth
		{name("org", "o", "user", "u", "extra", "x"), ""}, // deeper than the config
		{name("nope", "x"), ""},
	} {
		if tc.got != tc.want {
			t.Errorf("matched %q, want %q", tc.got, tc.want)
		}
	}
	_, shared := d.Match([]Entry{{"path", "/api/v1"}})
	_, shared2 := d.Match([]Entry{{"path", "/api/v2"}})
	if identity([]Entry{{"path", "/api/v1"}}, shared) != identity([]Entry{{"path", "/api/v2"}}, shared2) {
		t.Error("share_threshold: /api/v1 and /api/v2 do not share one identity")
	}
	if identity([]Entry{{"a", "bc"}}, nil) == identity([]Entry{{"ab", "c"}}, nil) {
		t.Error("identities of different entries collide")
	}
	if r, _ := d.Match([]Entry{{"org", "o"}, {"user", "u"}}); r.Algorithm != ratelimit.SlidingWindow {
		t.Error("per-rule algorithm")
	}
	if r, _ := d.Match([]Entry{{"path", "/x"}}); r.Algorithm != ratelimit.TokenBucket {
		t.Error("per-domain algorithm")
	}
}

// TestSampleConfig: the embedded sample loads.
func TestSampleConfig(t *testing.T) {
	if _, errs := parseFile("example.yaml", exampleConfig); len(errs) > 0 {
		t.Fatal(errs)
	}
}
