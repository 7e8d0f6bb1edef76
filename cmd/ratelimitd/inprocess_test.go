package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// startInProcess runs the service in the test process on the embedded
// miniredis and the sample configuration, with spans recorded in memory.
func startInProcess(t *testing.T, extra ...string) (*server, *tracetest.SpanRecorder, *syncBuffer) {
	t.Helper()
	o, err := parseFlags(append([]string{"-http", "127.0.0.1:0", "-grpc", "127.0.0.1:0", "-redis", ""}, extra...), func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	logs := &syncBuffer{}
	s, err := start(context.Background(), o, nil, tp, io.Discard, logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.shutdown(ctx, time.Second); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		_ = tp.Shutdown(ctx)
	})
	return s, rec, logs
}

// TestTelemetry: a gRPC call's server span has the decision's span as its
// child; /metrics passes promtool's lint with the library's metrics under
// namespace = domain; no raw descriptor value reaches the logs or the
// metrics.
func TestTelemetry(t *testing.T) {
	s, rec, logs := startInProcess(t, "-log-level", "debug")
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := rlsv3.NewRateLimitServiceClient(conn)
	const secret = "203.0.113.77"
	req := &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{
		{Entries: []*rlv3.RateLimitDescriptor_Entry{{Key: "remote_address", Value: secret}}},
		{Entries: []*rlv3.RateLimitDescriptor_Entry{{Key: "path", Value: "/login"}}},
	}}
	for range 4 {
		if _, err := client.ShouldRateLimit(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	// POST /json, as envoyproxy/ratelimit takes it: 429 once over.
	resp, err := http.Post(s.httpURL+"/json", "application/json", strings.NewReader(
		`{"domain":"edge","descriptors":[{"entries":[{"key":"path","value":"/login"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || !strings.Contains(string(body), `"overallCode":"OVER_LIMIT"`) {
		t.Fatalf("/json over the limit: %d %s", resp.StatusCode, body)
	}

	var server sdktrace.ReadOnlySpan
	var decisions []sdktrace.ReadOnlySpan
	for _, sp := range rec.Ended() {
		switch {
		case sp.Name() == "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit" && server == nil:
			server = sp
		case sp.Name() == "ratelimit edge":
			decisions = append(decisions, sp)
		}
	}
	if server == nil || len(decisions) == 0 {
		t.Fatalf("spans: server %v, %d decision spans", server, len(decisions))
	}
	child := false
	for _, d := range decisions {
		if d.Parent().SpanID() == server.SpanContext().SpanID() && d.SpanContext().TraceID() == server.SpanContext().TraceID() {
			child = true
		}
		for _, a := range d.Attributes() {
			if strings.Contains(a.Value.Emit(), secret) {
				t.Fatalf("decision span attribute %s holds the raw descriptor value", a.Key)
			}
		}
	}
	if !child {
		t.Fatal("no decision span is a child of the gRPC server span")
	}

	resp, err = http.Get(s.httpURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`ratelimit_decisions_total{algorithm="fixed_window",decision="blocked",namespace="edge",reason="quota"} 2`,
		`ratelimitd_descriptor_decisions_total{code="over_limit",descriptor="path_/login",domain="edge"} 2`,
		`ratelimitd_requests_total{api="grpc",code="over_limit"} 1`,
		`ratelimitd_config_last_reload_successful 1`,
	} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("/metrics lacks %s\n%s", want, grepLines(metrics, "ratelimit"))
		}
	}
	if bytes.Contains(metrics, []byte(secret)) {
		t.Fatal("/metrics holds a raw descriptor value")
	}
	if strings.Contains(logs.String(), secret) {
		t.Fatal("the logs hold a raw descriptor value")
	}
	if !strings.Contains(logs.String(), `"namespace":"edge"`) {
		t.Fatalf("no decision logged at debug:\n%s", logs.String())
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		// Lint the text format (promtool reads the classic exposition).
		req, _ := http.NewRequest("GET", s.httpURL+"/metrics", nil)
		req.Header.Set("Accept", "text/plain")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		text, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatal(err)
			}
			t.Fatalf("promtool check metrics: %v\n%s", err, out)
		}
	} else if os.Getenv("RATELIMIT_REQUIRE_REDIS") == "1" {
		t.Fatal("promtool not installed")
	}
}

func grepLines(b []byte, prefix string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) && !strings.Contains(l, "_bucket") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
