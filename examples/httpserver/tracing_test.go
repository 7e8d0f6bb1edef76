package main

import (
	"compress/gzip"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// collector is a fake OTLP/HTTP trace receiver: it decodes what the
// exporter posts to /v1/traces.
type collector struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	svc   []string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	var req coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	c.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				c.svc = append(c.svc, a.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	b, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	_, _ = w.Write(b)
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, requests become server spans named
// after their routes, exported over OTLP/HTTP and flushed on shutdown.
func TestTracesExported(t *testing.T) {
	col := &collector{}
	cs := httptest.NewServer(col)
	defer cs.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", cs.URL)
	cfg := testConfig(t)
	cfg.otlp = true
	s, out := startTest(t, cfg)
	if got := get(t, s.url+"/api/hello"); got.code != 200 {
		t.Fatalf("hello: %d", got.code)
	}
	for range 5 {
		get(t, s.url+"/api/hello")
	}
	if got := get(t, s.url+"/api/hello"); got.code != 429 {
		t.Fatalf("7th hello: %d", got.code)
	}
	// Exemplars link the duration histogram to the traces, in OpenMetrics.
	m := get(t, s.url+"/metrics", "Accept", "application/openmetrics-text; version=1.0.0")
	// The exemplar's labels come in either order.
	exemplar := regexp.MustCompile(`ratelimit_backend_duration_seconds_bucket\{[^}]*namespace="api"[^}]*\} \d+ # \{([^}]*)\} `)
	traceID := regexp.MustCompile(`(?:^|,)trace_id="([0-9a-f]{32})"(?:,|$)`)
	spanID := regexp.MustCompile(`(?:^|,)span_id="[0-9a-f]{16}"(?:,|$)`)
	exemplarTraces := map[string]bool{}
	for _, sm := range exemplar.FindAllSubmatch(m.body, -1) {
		tid := traceID.FindSubmatch(sm[1])
		if tid == nil || !spanID.Match(sm[1]) {
			t.Errorf("exemplar labels %s: want trace_id and span_id", sm[1])
			continue
		}
		exemplarTraces[string(tid[1])] = true
	}
	if len(exemplarTraces) == 0 {
		t.Errorf("no exemplar with a trace_id in the OpenMetrics exposition:\n%s", grepLines(string(m.body), "ratelimit_backend_duration_seconds_bucket"))
	}
	if err := s.shutdown(t.Context()); err != nil { // flushes the batch
		t.Fatal(err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	names := map[string]int{}
	for _, sp := range col.spans {
		if sp.Kind == tracepb.Span_SPAN_KIND_SERVER {
			names[sp.Name]++
		}
	}
	if names["GET /api/hello"] != 7 {
		t.Errorf("server spans by name %v, want 7 × GET /api/hello (output %s)", names, out)
	}
	// Each request has a decision span, a child of its server span.
	server := map[string]bool{}
	for _, sp := range col.spans {
		if sp.Kind == tracepb.Span_SPAN_KIND_SERVER {
			server[string(sp.SpanId)] = true
		}
	}
	decisions, blocked := 0, 0
	for _, sp := range col.spans {
		if sp.Name != "ratelimit api" {
			continue
		}
		decisions++
		if sp.Kind != tracepb.Span_SPAN_KIND_CLIENT || !server[string(sp.ParentSpanId)] {
			t.Errorf("decision span kind %v, parent known: %v", sp.Kind, server[string(sp.ParentSpanId)])
		}
		for _, a := range sp.Attributes {
			if a.Key == "ratelimit.decision" && a.GetValue().GetStringValue() == "blocked" {
				blocked++
			}
		}
	}
	for _, sp := range col.spans {
		if sp.Kind == tracepb.Span_SPAN_KIND_SERVER {
			delete(exemplarTraces, hex.EncodeToString(sp.TraceId))
		}
	}
	if len(exemplarTraces) != 0 {
		t.Errorf("exemplars name traces that were not exported: %v", exemplarTraces)
	}
	if decisions != 7 || blocked != 2 {
		t.Errorf("%d decision spans, %d blocked; want 7 and 2 (a burst of 5)", decisions, blocked)
	}
	if len(col.svc) == 0 || col.svc[0] != serviceName {
		t.Errorf("service.name %v", col.svc)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
