package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// Config is one loaded, validated set of configuration files: a domain each,
// in envoyproxy/ratelimit's format with ratelimitd's extensions. It is
// immutable once loaded; a reload builds a new one.
type Config struct {
	Domains map[string]*Domain
	// Files are the files it was read from, and Digest a hash of their
	// names and contents (a reload with the same Digest changes nothing).
	Files  []string
	Digest string
}

// Domain is one domain's tree of descriptors and its settings.
type Domain struct {
	Name string
	// Extensions (absent from envoyproxy/ratelimit's format).
	Fail      ratelimit.FailStrategy
	Timeout   time.Duration // 0: the -redis-timeout flag
	Algorithm ratelimit.Algorithm
	// DomainTag puts every key of the domain under one Redis Cluster
	// hash tag (cluster_mode: domain_tag).
	DomainTag bool
	root      node
	file      string
}

// node is one level of the descriptor tree.
type node struct {
	children  map[string]*node // by "key_value" or "key"
	wildcards []wildcard       // "key_prefix*..." patterns, in file order
	limit     *Rule
}

type wildcard struct {
	pattern string   // "key_value*"
	parts   []string // the pattern split at '*'
}

// Rule is a rate_limit of the configuration.
type Rule struct {
	// Path names the descriptor in metric labels and logs: its keys, and
	// the values written in the configuration ("remote_address",
	// "header_match_foo.path"), never a value taken from a request.
	Path            string
	RequestsPerUnit uint32
	Unit            string // "second", "minute", ...
	UnitCode        int32  // RateLimitResponse.RateLimit.Unit
	Unlimited       bool
	Name            string
	Replaces        []string
	Shadow          bool
	DetailedMetric  bool
	ShareThreshold  bool
	// Extensions.
	Algorithm ratelimit.Algorithm
	Burst     int64
	QuotaUnit string // RateLimit-Policy qu: "requests" (default), "content-bytes", ...
}

// Limit is the ratelimit.Limit of r.
func (r *Rule) Limit() ratelimit.Limit {
	return ratelimit.Limit{Rate: int64(r.RequestsPerUnit), Per: unitDuration[r.Unit], Burst: r.Burst}
}

// unitDuration is the period of each unit of envoyproxy/ratelimit (month
// and year as it counts them: 30 and 365 days).
var unitDuration = map[string]time.Duration{
	"second": time.Second,
	"minute": time.Minute,
	"hour":   time.Hour,
	"day":    24 * time.Hour,
	"week":   7 * 24 * time.Hour,
	"month":  30 * 24 * time.Hour,
	"year":   365 * 24 * time.Hour,
}

// unitCode is RateLimitResponse.RateLimit.Unit of each unit.
var unitCode = map[string]int32{"second": 1, "minute": 2, "hour": 3, "day": 4, "month": 5, "year": 6, "week": 7}

// ConfigError is a configuration problem, with the file, line and field it
// is about.
type ConfigError struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *ConfigError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Field, e.Msg)
}

// LoadConfig reads path: one YAML file, or every *.yaml and *.yml file of
// a directory (not its subdirectories; hidden files are skipped, as are
// Kubernetes ConfigMap's ..data links). Every problem found is returned,
// joined, each a *ConfigError.
func LoadConfig(path string) (*Config, error) {
	files, err := configFiles(path)
	if err != nil {
		return nil, err
	}
	cfg := &Config{Domains: map[string]*Domain{}, Files: files}
	h := sha256.New()
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(data))
		h.Write(data)
		d, ferrs := parseFile(f, data)
		errs = append(errs, ferrs...)
		if d == nil {
			continue
		}
		if prev, ok := cfg.Domains[d.Name]; ok {
			errs = append(errs, &ConfigError{File: f, Line: 1, Field: "domain", Msg: fmt.Sprintf("domain %q is also defined in %s", d.Name, prev.file)})
			continue
		}
		cfg.Domains[d.Name] = d
	}
	cfg.Digest = hex.EncodeToString(h.Sum(nil))
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

func configFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		name := e.Name()
		ext := filepath.Ext(name)
		if strings.HasPrefix(name, ".") || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		full := filepath.Join(path, name)
		if fi, err := os.Stat(full); err != nil || fi.IsDir() {
			continue
		}
		files = append(files, full)
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no *.yaml or *.yml file", path)
	}
	return files, nil
}

// parser walks one file's YAML nodes, collecting errors with their lines.
type parser struct {
	file string
	errs []error
}

func (p *parser) errorf(n *yaml.Node, field, format string, args ...any) {
	line := 1
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, &ConfigError{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// pairs returns a mapping's keys and values, reporting keys outside known.
func (p *parser) pairs(n *yaml.Node, where string, known ...string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, where, "want a mapping, not %s", kindName(n))
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		field := k.Value
		if where != "" {
			field = where + "." + k.Value
		}
		if !contains(known, k.Value) {
			p.errorf(k, field, "unknown field (known here: %s)", strings.Join(known, ", "))
			continue
		}
		if _, dup := out[k.Value]; dup {
			p.errorf(k, field, "given twice")
			continue
		}
		out[k.Value] = v
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func (p *parser) str(n *yaml.Node, field string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errorf(n, field, "want a string, not %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) boolean(n *yaml.Node, field string) bool {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		p.errorf(n, field, "want true or false, not %s", kindName(n))
	}
	return b
}

func (p *parser) integer(n *yaml.Node, field string, lo, hi int64) int64 {
	var v int64
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&v) != nil || v < lo || v > hi {
		p.errorf(n, field, "want a whole number from %d to %d, not %s", lo, hi, kindName(n))
		return 0
	}
	return v
}

var algorithms = map[string]ratelimit.Algorithm{
	"fixed_window":   ratelimit.FixedWindow,
	"token_bucket":   ratelimit.TokenBucket,
	"sliding_window": ratelimit.SlidingWindow,
}

func (p *parser) algorithm(n *yaml.Node, field string) (ratelimit.Algorithm, bool) {
	s, ok := p.str(n, field)
	if !ok {
		return 0, false
	}
	a, ok := algorithms[s]
	if !ok {
		p.errorf(n, field, "unknown algorithm %q (fixed_window, token_bucket, sliding_window)", s)
	}
	return a, ok
}

func parseFile(file string, data []byte) (*Domain, []error) {
	p := &parser{file: file}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		line := 1
		var te *yaml.TypeError
		msg := err.Error()
		if errors.As(err, &te) && len(te.Errors) > 0 {
			msg = te.Errors[0]
		}
		// yaml.v3 says "yaml: line N: ..."; keep the line.
		if rest, ok := strings.CutPrefix(msg, "yaml: line "); ok {
			if i := strings.IndexByte(rest, ':'); i > 0 {
				if n, err := strconv.Atoi(rest[:i]); err == nil {
					line, msg = n, strings.TrimSpace(rest[i+1:])
				}
			}
		}
		return nil, []error{&ConfigError{File: file, Line: line, Msg: "YAML: " + msg}}
	}
	if len(doc.Content) == 0 {
		return nil, []error{&ConfigError{File: file, Line: 1, Msg: "empty file"}}
	}
	root := doc.Content[0]
	f := p.pairs(root, "", "domain", "descriptors",
		// ratelimitd's extensions
		"fail_mode", "timeout", "algorithm", "cluster_mode")
	d := &Domain{file: file, Algorithm: ratelimit.FixedWindow}
	if n, ok := f["domain"]; !ok {
		p.errorf(root, "domain", "missing")
	} else if s, ok := p.str(n, "domain"); ok {
		if err := validDomain(s); err != "" {
			p.errorf(n, "domain", "%s", err)
		}
		d.Name = s
	}
	if n, ok := f["fail_mode"]; ok {
		switch s, _ := p.str(n, "fail_mode"); s {
		case "open":
			d.Fail = ratelimit.FailOpen
		case "closed":
			d.Fail = ratelimit.FailClosed
		default:
			p.errorf(n, "fail_mode", "want open or closed, not %q", s)
		}
	}
	if n, ok := f["timeout"]; ok {
		if s, ok := p.str(n, "timeout"); ok {
			t, err := time.ParseDuration(s)
			if err != nil || t <= 0 || t > time.Minute {
				p.errorf(n, "timeout", "want a duration from 1ms to 1m such as 50ms, not %q", s)
			}
			d.Timeout = t
		}
	}
	if n, ok := f["algorithm"]; ok {
		if a, ok := p.algorithm(n, "algorithm"); ok {
			d.Algorithm = a
		}
	}
	if n, ok := f["cluster_mode"]; ok {
		switch s, _ := p.str(n, "cluster_mode"); s {
		case "spread":
		case "domain_tag":
			d.DomainTag = true
		default:
			p.errorf(n, "cluster_mode", "want spread or domain_tag, not %q", s)
		}
	}
	d.root = node{children: map[string]*node{}}
	if n, ok := f["descriptors"]; ok {
		p.descriptors(d, &d.root, n, "descriptors", "")
	}
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return d, nil
}

// validDomain checks that a domain can be a namespace of the library (its
// keys' prefix and the namespace label of its metrics).
func validDomain(s string) string {
	if s == "" || len(s) > 64 {
		return "must be 1 to 64 bytes"
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '_' || b == '-' || b == '.') {
			return fmt.Sprintf("%q has %q: ratelimitd takes letters, digits, '_', '-' and '.' (the domain is the metrics' namespace label)", s, b)
		}
	}
	return ""
}

func (p *parser) descriptors(d *Domain, parent *node, list *yaml.Node, field, path string) {
	if list.Kind != yaml.SequenceNode {
		p.errorf(list, field, "want a list, not %s", kindName(list))
		return
	}
	for i, item := range list.Content {
		where := fmt.Sprintf("%s[%d]", field, i)
		f := p.pairs(item, where, "key", "value", "rate_limit", "descriptors", "shadow_mode",
			"detailed_metric", "share_threshold", "quota_mode", "value_to_metric", "metadata")
		kn, ok := f["key"]
		if !ok {
			p.errorf(item, where+".key", "missing")
			continue
		}
		key, _ := p.str(kn, where+".key")
		if key == "" {
			p.errorf(kn, where+".key", "empty")
			continue
		}
		value := ""
		if vn, ok := f["value"]; ok {
			value, _ = p.str(vn, where+".value")
		}
		final := key
		if value != "" {
			final += "_" + value
		}
		child := &node{children: map[string]*node{}}
		if _, dup := parent.children[final]; dup {
			p.errorf(kn, where+".key", "duplicate descriptor %q at this level", final)
			continue
		}
		parent.children[final] = child
		if strings.Contains(final, "*") {
			parent.wildcards = append(parent.wildcards, wildcard{pattern: final, parts: strings.Split(final, "*")})
		}
		childPath := final
		if path != "" {
			childPath = path + "." + final
		}
		shadow := false
		if n, ok := f["shadow_mode"]; ok {
			shadow = p.boolean(n, where+".shadow_mode")
		}
		if n, ok := f["quota_mode"]; ok && p.boolean(n, where+".quota_mode") {
			p.errorf(n, where+".quota_mode", "not supported by ratelimitd")
		}
		share := false
		if n, ok := f["share_threshold"]; ok {
			share = p.boolean(n, where+".share_threshold")
			if share && !strings.Contains(final, "*") {
				p.errorf(n, where+".share_threshold", "only for a value with a '*' wildcard")
			}
		}
		if n, ok := f["rate_limit"]; ok {
			r := p.rule(d, n, where+".rate_limit")
			if r != nil {
				r.Path, r.Shadow, r.ShareThreshold = childPath, shadow, share
				if n, ok := f["detailed_metric"]; ok {
					r.DetailedMetric = p.boolean(n, where+".detailed_metric")
				}
				child.limit = r
			}
		}
		if n, ok := f["descriptors"]; ok {
			p.descriptors(d, child, n, where+".descriptors", childPath)
		}
	}
}

func (p *parser) rule(d *Domain, n *yaml.Node, where string) *Rule {
	f := p.pairs(n, where, "unit", "requests_per_unit", "unlimited", "name", "replaces",
		// ratelimitd's extensions
		"algorithm", "burst", "quota_unit")
	r := &Rule{Algorithm: d.Algorithm, QuotaUnit: "requests"}
	if v, ok := f["unlimited"]; ok {
		r.Unlimited = p.boolean(v, where+".unlimited")
	}
	unit := ""
	if v, ok := f["unit"]; ok {
		unit, _ = p.str(v, where+".unit")
		unit = strings.ToLower(unit)
		if _, known := unitDuration[unit]; !known {
			p.errorf(v, where+".unit", "unknown unit %q (second, minute, hour, day, week, month, year)", unit)
		}
	}
	switch {
	case r.Unlimited && unit != "":
		p.errorf(f["unit"], where+".unit", "an unlimited rate_limit takes no unit")
	case !r.Unlimited && unit == "":
		p.errorf(n, where+".unit", "missing")
	}
	r.Unit, r.UnitCode = unit, unitCode[unit]
	if v, ok := f["requests_per_unit"]; ok {
		r.RequestsPerUnit = uint32(p.integer(v, where+".requests_per_unit", 0, 1<<32-1))
	} else if !r.Unlimited {
		p.errorf(n, where+".requests_per_unit", "missing")
	}
	if v, ok := f["name"]; ok {
		r.Name, _ = p.str(v, where+".name")
	}
	if v, ok := f["replaces"]; ok {
		if v.Kind != yaml.SequenceNode {
			p.errorf(v, where+".replaces", "want a list of {name: ...}")
		} else {
			for i, item := range v.Content {
				rf := p.pairs(item, fmt.Sprintf("%s.replaces[%d]", where, i), "name")
				nn, ok := rf["name"]
				name := ""
				if ok {
					name, _ = p.str(nn, where+".replaces.name")
				}
				switch {
				case name == "":
					p.errorf(item, fmt.Sprintf("%s.replaces[%d].name", where, i), "empty")
				case name == r.Name:
					p.errorf(nn, fmt.Sprintf("%s.replaces[%d].name", where, i), "a limit cannot replace itself")
				default:
					r.Replaces = append(r.Replaces, name)
				}
			}
		}
	}
	if v, ok := f["algorithm"]; ok {
		if a, ok := p.algorithm(v, where+".algorithm"); ok {
			r.Algorithm = a
		}
	}
	if v, ok := f["burst"]; ok {
		r.Burst = p.integer(v, where+".burst", 1, 1<<53-1)
		if r.Algorithm != ratelimit.TokenBucket {
			p.errorf(v, where+".burst", "only the token_bucket algorithm has a burst apart from requests_per_unit")
		}
	}
	if v, ok := f["quota_unit"]; ok {
		r.QuotaUnit, _ = p.str(v, where+".quota_unit")
		if !validToken(r.QuotaUnit) {
			p.errorf(v, where+".quota_unit", "want a short word such as requests or content-bytes")
		}
	}
	if _, known := unitDuration[unit]; known && !r.Unlimited && r.RequestsPerUnit > 0 {
		if err := r.Algorithm.Validate(r.Limit()); err != nil {
			p.errorf(n, where, "%v", err)
		}
	}
	return r
}

func validToken(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !('a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

// Entry is one key and value of a request's descriptor.
type Entry struct{ Key, Value string }

// Match finds the rule of a descriptor's entries, as envoyproxy/ratelimit
// does: level by level, the entry's "key_value" first, then a wildcard
// pattern ("key_prefix*"), then the key alone (any value); the rule applies
// only at the descriptor's last entry. It returns nil when nothing
// matches. shared is, for each entry, the wildcard pattern to count it
// under when share_threshold is on (else "").
func (d *Domain) Match(entries []Entry) (r *Rule, shared []string) {
	level := &d.root
	for i, e := range entries {
		full := e.Key + "_" + e.Value
		next, ok := level.children[full]
		pattern := ""
		if !ok {
			for _, w := range level.wildcards {
				if wildcardMatch(w.parts, full) {
					next, ok, pattern = level.children[w.pattern], true, w.pattern
					break
				}
			}
		}
		if !ok {
			next, ok = level.children[e.Key]
		}
		if !ok {
			return nil, nil
		}
		if pattern != "" && next.limit != nil && next.limit.ShareThreshold {
			if shared == nil {
				shared = make([]string, len(entries))
			}
			shared[i] = pattern
		}
		if i == len(entries)-1 {
			return next.limit, shared
		}
		level = next
	}
	return nil, nil
}

// wildcardMatch reports whether s matches a pattern split at its '*'s:
// the first part as a prefix, the last as a suffix, the others in order
// between them.
func wildcardMatch(parts []string, s string) bool {
	if len(parts) == 1 {
		return parts[0] == s
	}
	first, last := parts[0], parts[len(parts)-1]
	if !strings.HasPrefix(s, first) || len(s) < len(first)+len(last) || !strings.HasSuffix(s, last) {
		return false
	}
	mid := s[len(first) : len(s)-len(last)]
	for _, part := range parts[1 : len(parts)-1] {
		i := strings.Index(mid, part)
		if i < 0 {
			return false
		}
		mid = mid[i+len(part):]
	}
	return true
}
