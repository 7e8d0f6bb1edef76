package dashboards

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Limit    int    `yaml:"limit"`
		Rules    []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert         string            `yaml:"alert"`
	Record        string            `yaml:"record"`
	Expr          string            `yaml:"expr"`
	For           string            `yaml:"for"`
	KeepFiringFor string            `yaml:"keep_firing_for"`
	Labels        map[string]string `yaml:"labels"`
	Annotations   map[string]string `yaml:"annotations"`
}

type ruleTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name          string `yaml:"name"`
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// readYAML decodes file into v; strict makes a key v does not know an
// error (for alerts.yml, whose schema v covers whole).
func readYAML(t *testing.T, file string, strict bool, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(strict) // a misspelt key is an error, not a silently ignored rule part
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func alertRules(t *testing.T) []rule {
	t.Helper()
	var f ruleFile
	readYAML(t, "alerts.yml", true, &f)
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatal("alerts.yml has no rules")
	}
	return rules
}

var severities = []string{"info", "warning", "critical"}

// TestAlertRulesShape checks what promtool does not: every rule is an alert
// with a for clause, a severity, the annotations a responder needs, and a
// runbook section and dashboard that exist.
func TestAlertRulesShape(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	uids := map[string]bool{}
	for _, c := range committedDashboards(t) {
		uid, _ := c.d["uid"].(string)
		uids[uid] = true
	}
	names := map[string]bool{}
	for _, r := range alertRules(t) {
		if r.Alert == "" {
			t.Errorf("rule %q is not an alert", r.Record)
			continue
		}
		if names[r.Alert] {
			t.Errorf("%s: defined twice", r.Alert)
		}
		names[r.Alert] = true
		if d, err := time.ParseDuration(r.For); err != nil || d < time.Minute {
			t.Errorf("%s: for %q, want a duration of a minute or more", r.Alert, r.For)
		}
		if !slices.Contains(severities, r.Labels["severity"]) {
			t.Errorf("%s: severity %q, want one of %v", r.Alert, r.Labels["severity"], severities)
		}
		for _, a := range []string{"summary", "description", "runbook", "runbook_url", "dashboard"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
		anchor := strings.ToLower(r.Alert)
		if !strings.HasSuffix(r.Annotations["runbook_url"], "/dashboards/README.md#"+anchor) {
			t.Errorf("%s: runbook_url %q, want dashboards/README.md#%s", r.Alert, r.Annotations["runbook_url"], anchor)
		}
		if !strings.Contains(string(readme), "\n### "+r.Alert+"\n") {
			t.Errorf("%s: README.md has no \"### %s\" runbook section", r.Alert, r.Alert)
		}
		if uid := strings.TrimPrefix(r.Annotations["dashboard"], "/d/"); !uids[uid] {
			t.Errorf("%s: dashboard %q is not one of the dashboards", r.Alert, r.Annotations["dashboard"])
		}
		for _, m := range metricRE.FindAllString(r.Expr, -1) {
			if !slices.Contains(knownMetrics, m) {
				t.Errorf("%s: unknown metric %s", r.Alert, m)
			}
		}
		if strings.Contains(r.Expr, "$") {
			t.Errorf("%s: a Grafana variable in a rule: %s", r.Alert, r.Expr)
		}
	}
}

// TestAlertTestsCoverEveryAlert checks that alerts_test.yml shows each alert
// both firing and not firing.
func TestAlertTestsCoverEveryAlert(t *testing.T) {
	var f ruleTests
	readYAML(t, "alerts_test.yml", false, &f)
	if !slices.Equal(f.RuleFiles, []string{"alerts.yml"}) {
		t.Errorf("rule_files = %v, want [alerts.yml]", f.RuleFiles)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range f.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, r := range alertRules(t) {
		if !firing[r.Alert] {
			t.Errorf("alerts_test.yml never shows %s firing", r.Alert)
		}
		if !quiet[r.Alert] {
			t.Errorf("alerts_test.yml never shows %s not firing", r.Alert)
		}
	}
}

// TestPromtoolRules runs what .ci/run runs: promtool's syntax check and the
// unit tests of the rules.
func TestPromtoolRules(t *testing.T) {
	promtool := redistest.Binary(t, "promtool")
	out, err := exec.Command(promtool, "check", "rules", "alerts.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules alerts.yml: %v\n%s", err, out)
	}
	if n := len(alertRules(t)); !regexp.MustCompile(`SUCCESS: ` + strconv.Itoa(n) + ` rules found`).Match(out) {
		t.Errorf("promtool check rules: want %d rules:\n%s", n, out)
	}
	out, err = exec.Command(promtool, "test", "rules", "alerts_test.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules alerts_test.yml: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool test rules:\n%s", out)
	}
}
