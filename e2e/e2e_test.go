package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	rlotel "github.com/distributed-rate-limiter/ratelimit-go/telemetry/otel"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/prom"
)

// demo is one instance of examples/httpserver.
type demo struct {
	name      string // process name in logs
	service   string // OTEL_SERVICE_NAME
	fail      string // -fail
	noRetries bool   // the Redis client does not retry
	breaker   bool   // -breaker: a circuit breaker in front of Redis
	addr      string
	proc      *proc
}

// redisURL is the demo's REDIS_URL for Redis at addr. With go-redis'
// default retries (3, with a random backoff of up to a second) a refused
// connection is retried until the limiter's 100 ms backend timeout passes,
// so the error is a timeout; without retries (max_retries=-1) it is a
// connection error.
func (d *demo) redisURL(addr string) string {
	u := "redis://" + addr + "/0"
	if d.noRetries {
		u += "?max_retries=-1"
	}
	return u
}

// The Prometheus jobs: the demo servers, and the test's own dropper.
const (
	demoJob    = "ratelimit-demo"
	dropperJob = "ratelimit-e2e-dropper"
)

// The phases of the run, bounded: warm-up until each Prometheus has
// scraped each demo this many times, then an outage of Redis held for at
// least these durations (and until Prometheus has seen its errors).
const (
	warmupScrapes = 10
	stallFor      = 3 * time.Second // calls time out: timeout errors, slow round trips
	resetFor      = 2 * time.Second // connections refused: connection errors
	phaseTimeout  = 60 * time.Second
)

func TestEndToEnd(t *testing.T) {
	redisBin := need(t, "redis-server", "apt-get install -y redis-server")
	promBin := need(t, "prometheus", "apt-get install -y prometheus")
	goBin := goBinary(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "examples", "httpserver", "main.go")); err != nil {
		msg := "the demo server examples/httpserver is not in this checkout: " + err.Error()
		if os.Getenv(requireEnv) == "1" {
			t.Fatalf("%s=1 and %s", requireEnv, msg)
		}
		t.Skip(msg)
	}
	// Bounded by the test's deadline (go test -timeout), less time for the
	// processes to stop.
	deadline := time.Now().Add(15 * time.Minute)
	if d, ok := t.Deadline(); ok {
		deadline = d.Add(-30 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	ps := newProcs(t)

	// Build the demo (from the library module, as a user would) and Jaeger
	// (from the tools module) side by side.
	demoBin := filepath.Join(ps.dir, "httpserver")
	var (
		wg                   sync.WaitGroup
		jaegerBin            string
		demoErr, jaegerErr   error
		demoTook, jaegerTook time.Duration
	)
	wg.Go(func() {
		start := time.Now()
		var out string
		out, demoErr = build(ctx, root, cleanEnv(), goBin, "build", "-o", demoBin, "./examples/httpserver")
		if demoErr != nil {
			demoErr = fmt.Errorf("go build ./examples/httpserver: %v\n%s", demoErr, out)
		}
		demoTook = time.Since(start)
	})
	wg.Go(func() {
		start := time.Now()
		jaegerBin, jaegerErr = jaegerBinary(ctx, goBin)
		jaegerTook = time.Since(start)
	})
	wg.Wait()
	if err := errors.Join(demoErr, jaegerErr); err != nil {
		t.Fatal(err)
	}
	t.Logf("built the demo in %v and Jaeger %s in %v (%s)", demoTook.Round(time.Millisecond), jaegerVersion, jaegerTook.Round(time.Millisecond), jaegerBin)

	// Redis, behind the fault proxy.
	redisAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	_, redisPort, _ := net.SplitHostPort(redisAddr)
	redis := ps.start(t, "redis", cleanEnv(), redisBin,
		"--port", redisPort, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", ps.dir)
	waitFor(t, "redis-server", 10*time.Second, []*proc{redis}, func() error { return redisPing(redisAddr) })
	proxy := startProxy(t, redisAddr)

	jaeger := startJaeger(t, ps, jaegerBin)
	waitFor(t, "Jaeger", 30*time.Second, []*proc{jaeger.proc}, func() error { return jaeger.ready(ctx) })

	demos := []*demo{
		{name: "demo-open", service: "ratelimit-demo", fail: "open", breaker: true},
		{name: "demo-closed", service: "ratelimit-demo-failclosed", fail: "closed", noRetries: true},
	}
	var targets []string
	watch := []*proc{redis, jaeger.proc}
	for _, d := range demos {
		d.addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		env := cleanEnv(
			"REDIS_URL="+d.redisURL(proxy.addr()),
			"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+jaeger.otlpHTTP,
			"OTEL_SERVICE_NAME="+d.service,
			"OTEL_BSP_SCHEDULE_DELAY=200", // ms: spans reach Jaeger soon after their request
		)
		args := []string{"-addr", d.addr, "-fail", d.fail, "-load", "-load-for", "10m"}
		if d.breaker {
			args = append(args, "-breaker")
		}
		d.proc = ps.start(t, d.name, env, demoBin, args...)
		targets = append(targets, d.addr)
		watch = append(watch, d.proc)
	}
	for _, d := range demos {
		waitFor(t, d.name, 30*time.Second, watch, func() error { return httpOK(ctx, "http://"+d.addr+"/healthz") })
	}

	rulesFile, err := filepath.Abs(filepath.Join("..", "dashboards", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	jobs := []scrapeJob{
		{name: demoJob, targets: targets},
		{name: dropperJob, targets: []string{startDropper(t, redisAddr)}},
	}
	classic := startPrometheus(t, ps, promBin, "prometheus-classic", false, jobs, rulesFile)
	native := startPrometheus(t, ps, promBin, "prometheus-native", true, jobs, rulesFile)
	proms := []*promServer{classic, native}
	watch = append(watch, classic.proc, native.proc)
	for _, p := range proms {
		waitFor(t, p.name, 30*time.Second, watch, func() error { return p.ready(ctx) })
	}
	t0 := time.Now()

	// Warm-up: every target scraped warmupScrapes times by both servers,
	// and the dropper has dropped events.
	waitFor(t, "the warm-up scrapes", phaseTimeout, watch, func() error {
		for _, p := range proms {
			up, err := p.scalar(ctx, `count(up == 1)`, time.Now())
			if err != nil {
				return err
			}
			n, err := p.scalar(ctx, `min(count_over_time(up[1m]))`, time.Now())
			if err != nil {
				return err
			}
			if up != float64(len(demos)+1) || n < warmupScrapes {
				return fmt.Errorf("%s: %v of %d targets up, %v scrapes", p.name, up, len(demos)+1, n)
			}
			dropped, err := p.scalar(ctx, `sum(`+prom.DroppedName+`)`, time.Now())
			if err != nil {
				return err
			}
			if dropped == 0 {
				return fmt.Errorf("%s: no dropped events yet", p.name)
			}
		}
		return nil
	})

	// A Redis outage: first a stall (calls time out), then refused
	// connections. Both demos fail: one open, one closed.
	outage := func(m faultMode, hold time.Duration, errType string, fromDemos int) {
		start := time.Now()
		proxy.set(m)
		waitFor(t, fmt.Sprintf("%s errors from %d demos", errType, fromDemos), phaseTimeout, watch, func() error {
			if time.Since(start) < hold {
				return fmt.Errorf("holding the %s for %v", m, hold)
			}
			for _, p := range proms {
				n, err := p.scalar(ctx, fmt.Sprintf(`count(count by (instance) (ratelimit_backend_errors_total{job=%q,type=%q}))`, demoJob, errType), time.Now())
				if err != nil {
					return err
				}
				if n < float64(fromDemos) {
					return fmt.Errorf("%s: %s errors from %v demos", p.name, errType, n)
				}
			}
			return nil
		})
		t.Logf("Redis %s for %v", m, time.Since(start).Round(time.Millisecond))
	}
	outage(stall, stallFor, "timeout", len(demos))
	outage(reset, resetFor, "connection", 1) // demo-closed, whose client does not retry
	proxy.set(pass)
	restored := time.Now()
	waitFor(t, "the demos deciding on Redis again, scraped", phaseTimeout, watch, func() error {
		for _, p := range proms {
			last, err := p.scalar(ctx, `min(timestamp(up))`, time.Now())
			if err != nil {
				return err
			}
			if last < float64(restored.Add(3*time.Second).Unix()) {
				return fmt.Errorf("%s: last scrape at %v", p.name, last)
			}
			back, err := p.scalar(ctx, `count(count by (instance) (increase(ratelimit_decisions_total{job="`+demoJob+`",reason="quota"}[2s]) > 0))`, time.Now())
			if err != nil {
				return err
			}
			if back < float64(len(demos)) {
				return fmt.Errorf("%s: %v demos deciding on Redis", p.name, back)
			}
		}
		return nil
	})
	tEnd := time.Now()
	t.Logf("data from %s to %s (%v)", t0.Format(time.TimeOnly), tEnd.Format(time.TimeOnly), tEnd.Sub(t0).Round(time.Second))

	t.Run("histogram modes", func(t *testing.T) { checkHistogramModes(ctx, t, classic, native, tEnd) })
	namespaces := checkNamespaceVariable(ctx, t, proms, tEnd)
	vars := newGrafanaVars(namespaces, t0, tEnd, scrapeInterval)
	t.Run("dashboard queries", func(t *testing.T) { checkDashboards(ctx, t, proms, vars, t0, tEnd) })
	t.Run("alert rules", func(t *testing.T) { checkAlerts(ctx, t, proms, t0, time.Now()) })
	t.Run("traces", func(t *testing.T) { checkTraces(ctx, t, jaeger, demos) })
	t.Run("exemplars", func(t *testing.T) { checkExemplars(ctx, t, classic, native, jaeger, vars, t0, tEnd) })
}

// redisPing returns nil when a PING at addr is answered +PONG.
func redisPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING: %q", line)
	}
	return nil
}

// checkHistogramModes checks that each Prometheus has the histogram in the
// form the test means it to: so that the classic and the native halves of
// the latency queries are each exercised.
func checkHistogramModes(ctx context.Context, t *testing.T, classic, native *promServer, at time.Time) {
	count := func(p *promServer, sel string) int {
		r, err := p.query(ctx, sel, at)
		if err != nil {
			t.Fatal(err)
		}
		return len(r.Result)
	}
	bucket, nat := prom.BackendDurationName+"_bucket", prom.BackendDurationName
	if n, m := count(classic, bucket), count(classic, nat); n == 0 || m != 0 {
		t.Errorf("%s: %d classic bucket series, %d native histograms; want some and none", classic.name, n, m)
	}
	if n, m := count(native, bucket), count(native, nat); n != 0 || m == 0 {
		t.Errorf("%s: %d classic bucket series, %d native histograms; want none and some", native.name, n, m)
	}
}

// checkNamespaceVariable runs the dashboards' namespace variable query and
// returns its values.
func checkNamespaceVariable(ctx context.Context, t *testing.T, proms []*promServer, at time.Time) []string {
	_, varQueries := dashboardQueries(t, filepath.Join("..", "dashboards"))
	var values []string
	for _, q := range varQueries {
		metric, label, ok := parseLabelValues(q)
		if !ok {
			t.Fatalf("variable query %q: not label_values(metric, label)", q)
		}
		for _, p := range proms {
			v, err := p.labelValues(ctx, label, metric)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(v, "api") || !slices.Contains(v, "llm") {
				t.Errorf("%s: %s = %v, want the demo's namespaces api and llm", p.name, q, v)
			}
			values = v
		}
	}
	if len(values) == 0 {
		t.Fatal("no namespace values")
	}
	return values
}

// parseLabelValues splits "label_values(metric, label)".
func parseLabelValues(q string) (metric, label string, ok bool) {
	inner, found := strings.CutPrefix(strings.TrimSpace(q), "label_values(")
	inner, found2 := strings.CutSuffix(inner, ")")
	metric, label, found3 := strings.Cut(inner, ",")
	return strings.TrimSpace(metric), strings.TrimSpace(label), found && found2 && found3
}

// classicOnly reports whether expr reads only the classic series of the
// duration histogram (the heatmap): it has no data on a Prometheus that
// keeps the native histogram only.
func classicOnly(expr string) bool {
	classic := strings.Contains(expr, prom.BackendDurationName+"_")
	nativeSel := strings.Contains(expr, prom.BackendDurationName+"{")
	return classic && !nativeSel
}

// checkDashboards runs every panel query of every dashboard as Grafana
// would (range queries for the charts, instant ones for the table) on both
// servers, and logs the number of series each returned.
func checkDashboards(ctx context.Context, t *testing.T, proms []*promServer, vars grafanaVars, start, end time.Time) {
	queries, _ := dashboardQueries(t, filepath.Join("..", "dashboards"))
	var table strings.Builder
	fmt.Fprintf(&table, "variables: $namespace=%s $__interval=%s $__rate_interval=%s $__range=%s\n",
		strings.Join(vars.namespaces, "|"), promDuration(vars.interval), promDuration(vars.rateInterval), promDuration(vars.rangeDur))
	fmt.Fprintf(&table, "| dashboard / panel / query | kind | series (classic) | series (native) | expr |\n|---|---|---|---|---|\n")
	for _, q := range queries {
		expr, err := vars.expand(q.Expr)
		if err != nil {
			t.Errorf("%s: %v", q, err)
			continue
		}
		counts := make([]int, len(proms))
		for i, p := range proms {
			var r queryResult
			if q.Instant {
				r, err = p.query(ctx, expr, end)
			} else {
				r, err = p.queryRange(ctx, expr, start, end, vars.interval)
			}
			if err != nil {
				t.Errorf("%s on %s: %v\n\t%s", q, p.name, err, expr)
				continue
			}
			counts[i] = len(r.Result)
			want := 1
			if p.native && classicOnly(q.Expr) {
				want = 0 // documented in dashboards/README.md: the heatmap needs classic buckets
			}
			if (want == 0) != (counts[i] == 0) {
				t.Errorf("%s on %s: %d series, want %s\n\t%s", q, p.name, counts[i], map[bool]string{true: "none (classic buckets only)", false: "some"}[want == 0], expr)
			}
		}
		kind := "range"
		if q.Instant {
			kind = "instant"
		}
		fmt.Fprintf(&table, "| %s | %s | %d | %d | `%s` |\n", q, kind, counts[0], counts[1], strings.ReplaceAll(q.Expr, "|", `\|`))
	}
	t.Logf("dashboard queries (%d):\n%s", len(queries), table.String())
}

// checkAlerts checks that both servers loaded dashboards/alerts.yml
// healthy, that every alert expression returned series over the run, and
// that every alert became pending or firing (Prometheus' ALERTS series).
func checkAlerts(ctx context.Context, t *testing.T, proms []*promServer, start, end time.Time) {
	var table strings.Builder
	fmt.Fprintf(&table, "| alert | series (classic) | series (native) | states seen (classic) | states seen (native) | expr |\n|---|---|---|---|---|---|\n")
	type row struct {
		counts [2]int
		states [2]string
		expr   string
	}
	rows := map[string]*row{}
	var names []string
	for i, p := range proms {
		groups, err := p.rules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen := alertStates(ctx, t, p, start, end)
		n := 0
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if r.Type != "alerting" {
					continue
				}
				n++
				if r.Health != "ok" || r.LastError != "" {
					t.Errorf("%s: rule %s: health %q %s", p.name, r.Name, r.Health, r.LastError)
				}
				if rows[r.Name] == nil {
					rows[r.Name] = &row{}
					names = append(names, r.Name)
				}
				res, err := p.queryRange(ctx, r.Query, start, end, scrapeInterval)
				if err != nil {
					t.Errorf("%s: %s: %v", p.name, r.Name, err)
					continue
				}
				rows[r.Name].counts[i] = len(res.Result)
				rows[r.Name].expr = strings.Join(strings.Fields(r.Query), " ")
				rows[r.Name].states[i] = strings.Join(seen[r.Name], ",")
				if len(res.Result) == 0 {
					t.Errorf("%s: alert %s: its expression returned no series during the run\n\t%s", p.name, r.Name, r.Query)
				}
				if len(seen[r.Name]) == 0 {
					t.Errorf("%s: alert %s never became pending or firing", p.name, r.Name)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no alerting rules loaded", p.name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		r := rows[name]
		fmt.Fprintf(&table, "| %s | %d | %d | %s | %s | `%s` |\n", name, r.counts[0], r.counts[1], r.states[0], r.states[1], strings.ReplaceAll(r.expr, "|", `\|`))
	}
	t.Logf("alert rules (%d):\n%s", len(names), table.String())
}

// alertStates returns, per alert name, the states (pending, firing) its
// ALERTS series had during [start, end].
func alertStates(ctx context.Context, t *testing.T, p *promServer, start, end time.Time) map[string][]string {
	res, err := p.queryRange(ctx, `count by (alertname, alertstate) (ALERTS)`, start, end, scrapeInterval)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, s := range res.Result {
		out[s.Metric["alertname"]] = append(out[s.Metric["alertname"]], s.Metric["alertstate"])
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

// checkTraces checks the demos' traces in Jaeger: decision spans with the
// ratelimit.* attributes, children of the HTTP server spans; blocked and
// allowed decisions; both limits of /api/generate under one server span;
// and the fail-open and fail-closed decisions of the outage.
func checkTraces(ctx context.Context, t *testing.T, j *jaegerServer, demos []*demo) {
	var services []string
	if _, err := j.get(ctx, "/api/services", &services); err != nil {
		t.Fatal(err)
	}
	for _, d := range demos {
		if !slices.Contains(services, d.service) {
			t.Errorf("Jaeger services %v lack %s", services, d.service)
		}
	}
	open, closed := demos[0], demos[1]

	search := func(d *demo, tags map[string]string, why string) []jaegerTrace {
		t.Helper()
		traces, err := j.search(ctx, d.service, tags, 50)
		if err != nil {
			t.Fatal(err)
		}
		if len(traces) == 0 {
			t.Errorf("%s: no trace with %v (%s)", d.service, tags, why)
		}
		return traces
	}
	checked := 0
	check := func(traces []jaegerTrace, want map[string]string) {
		t.Helper()
		for _, tr := range traces {
			byID := map[string]jaegerSpan{}
			for _, s := range tr.Spans {
				byID[s.SpanID] = s
			}
			for _, s := range tr.Spans {
				if !strings.HasPrefix(s.OperationName, "ratelimit ") || !matches(s, want) {
					continue
				}
				checked++
				checkDecisionSpan(t, s, byID)
			}
		}
	}
	check(search(open, map[string]string{string(rlotel.DecisionKey): rlotel.Blocked}, "the abusive load client"), map[string]string{string(rlotel.DecisionKey): rlotel.Blocked})
	check(search(open, map[string]string{string(rlotel.DecisionKey): rlotel.Allowed}, "the well-behaved load clients"), map[string]string{string(rlotel.DecisionKey): rlotel.Allowed})
	check(search(open, map[string]string{string(rlotel.ReasonKey): "fail_open"}, "the outage"), map[string]string{string(rlotel.ReasonKey): "fail_open"})
	check(search(closed, map[string]string{string(rlotel.ReasonKey): "fail_closed"}, "the outage"), map[string]string{string(rlotel.ReasonKey): "fail_closed"})
	skipped := map[string]string{string(rlotel.ReasonKey): "fail_open", "error.type": "circuit_open"}
	check(search(open, skipped, "its circuit breaker skipping Redis in the outage"), skipped)
	if checked == 0 {
		t.Fatal("no decision span checked")
	}

	// /api/generate is under two limits: both decisions are children of
	// the same server span.
	both := 0
	for _, tr := range search(open, map[string]string{string(rlotel.NamespaceKey): "llm"}, "/api/generate") {
		parents := map[string]map[string]bool{} // server span -> namespaces decided under it
		for _, s := range tr.Spans {
			if ns := s.tagString(string(rlotel.NamespaceKey)); ns != "" && s.parent() != "" {
				if parents[s.parent()] == nil {
					parents[s.parent()] = map[string]bool{}
				}
				parents[s.parent()][ns] = true
			}
		}
		for _, ns := range parents {
			if ns["api"] && ns["llm"] {
				both++
			}
		}
	}
	if both == 0 {
		t.Error("no /api/generate trace with both the api and the llm decision under one server span")
	}
	t.Logf("checked %d decision spans; %d /api/generate requests with both decisions under their server span", checked, both)
}

func matches(s jaegerSpan, want map[string]string) bool {
	for k, v := range want {
		if s.tagString(k) != v {
			return false
		}
	}
	return true
}

// checkDecisionSpan checks one "ratelimit <namespace>" span and its parent.
func checkDecisionSpan(t *testing.T, s jaegerSpan, byID map[string]jaegerSpan) {
	t.Helper()
	ns := s.tagString(string(rlotel.NamespaceKey))
	if s.OperationName != "ratelimit "+ns {
		t.Errorf("span %s named %q, namespace %q", s.SpanID, s.OperationName, ns)
	}
	if kind := s.tagString("span.kind"); kind != "client" {
		t.Errorf("span %s: kind %q, want client", s.SpanID, kind)
	}
	for _, k := range []string{string(rlotel.AlgorithmKey), string(rlotel.DecisionKey), string(rlotel.ReasonKey), string(rlotel.CostKey), "db.system.name"} {
		if _, ok := s.tag(k); !ok {
			t.Errorf("span %s (%s): no %s attribute", s.SpanID, s.OperationName, k)
		}
	}
	switch reason := s.tagString(string(rlotel.ReasonKey)); reason {
	case "fail_open", "fail_closed":
		if et := s.tagString("error.type"); et != "timeout" && et != "connection" && et != "circuit_open" {
			t.Errorf("span %s: %s with error.type %q, want timeout, connection or circuit_open", s.SpanID, reason, et)
		}
	case "quota":
		if _, ok := s.tag(string(rlotel.RemainingKey)); !ok {
			t.Errorf("span %s: a decision by Redis without %s", s.SpanID, rlotel.RemainingKey)
		}
	}
	parent, ok := byID[s.parent()]
	switch {
	case s.parent() == "":
		t.Errorf("span %s (%s) has no parent", s.SpanID, s.OperationName)
	case !ok:
		t.Errorf("span %s: parent %s not in the trace", s.SpanID, s.parent())
	case parent.tagString("span.kind") != "server" || !strings.HasPrefix(parent.OperationName, "GET /api/"):
		t.Errorf("span %s: parent %q (kind %q), want the HTTP server span of an /api/ route", s.SpanID, parent.OperationName, parent.tagString("span.kind"))
	}
}

// checkExemplars checks that Grafana's exemplar query of each latency
// target finds exemplars (on the classic server; on the native one too,
// except for the classic-only heatmap: Prometheus 2.42 keeps the exemplars
// of a protobuf scrape with the native histogram), and that they name
// traces Jaeger has: the request's server span, with the decision span of
// the exemplar's namespace under it.
func checkExemplars(ctx context.Context, t *testing.T, classic, native *promServer, j *jaegerServer, vars grafanaVars, start, end time.Time) {
	queries, _ := dashboardQueries(t, filepath.Join("..", "dashboards"))
	type ref struct{ trace, span, namespace string }
	proms := []*promServer{classic, native}
	refs := make([][]ref, len(proms))
	seen := []map[string]bool{{}, {}}
	var table strings.Builder
	fmt.Fprintf(&table, "| dashboard / panel / query | exemplars (classic) | exemplars (native) |\n|---|---|---|\n")
	for _, q := range queries {
		if !q.Exemplar {
			continue
		}
		expr, err := vars.expand(q.Expr)
		if err != nil {
			t.Fatal(err)
		}
		var counts [2]int
		for i, p := range proms {
			ex, err := p.exemplars(ctx, expr, start, end)
			if err != nil {
				t.Fatalf("%s: %s: %v", p.name, q, err)
			}
			for _, s := range ex {
				counts[i] += len(s.Exemplars)
				for _, e := range s.Exemplars {
					if id := e.Labels["trace_id"]; !seen[i][id] {
						seen[i][id] = true
						refs[i] = append(refs[i], ref{id, e.Labels["span_id"], s.SeriesLabels["namespace"]})
					}
				}
			}
			want := !(p.native && classicOnly(q.Expr))
			if want != (counts[i] > 0) {
				t.Errorf("%s on %s: %d exemplars, want %s", q, p.name, counts[i], map[bool]string{true: "some", false: "none"}[want])
			}
		}
		fmt.Fprintf(&table, "| %s | %d | %d |\n", q, counts[0], counts[1])
	}
	t.Logf("exemplars:\n%s", table.String())

	// Up to 5 exemplars of each server, spread over the run.
	for i, p := range proms {
		if len(refs[i]) == 0 {
			t.Errorf("%s: no exemplar", p.name)
			continue
		}
		step := max(1, len(refs[i])/5)
		for k := 0; k < len(refs[i]) && k < 5*step; k += step {
			r := refs[i][k]
			if len(r.trace) != 32 || len(r.span) != 16 {
				t.Errorf("exemplar %+v: want a 32-hex trace_id and a 16-hex span_id", r)
				continue
			}
			tr, err := j.waitTrace(ctx, r.trace, 15*time.Second)
			if err != nil {
				t.Errorf("%s: exemplar: %v", p.name, err)
				continue
			}
			var server *jaegerSpan
			for i := range tr.Spans {
				if tr.Spans[i].SpanID == r.span {
					server = &tr.Spans[i]
				}
			}
			if server == nil || server.tagString("span.kind") != "server" {
				t.Errorf("trace %s: exemplar span %s is not a server span of the trace", r.trace, r.span)
				continue
			}
			decided := false
			for _, s := range tr.Spans {
				if s.parent() == r.span && s.OperationName == "ratelimit "+r.namespace {
					decided = true
				}
			}
			if !decided {
				t.Errorf("trace %s: no %q decision span under the exemplar's server span %s (%s)", r.trace, "ratelimit "+r.namespace, r.span, server.OperationName)
				continue
			}
			t.Logf("%s exemplar: trace %s, server span %s %q with its %q decision span", p.name, r.trace, r.span, server.OperationName, "ratelimit "+r.namespace)
		}
	}
}
