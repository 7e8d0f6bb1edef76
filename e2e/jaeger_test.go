package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// jaegerVersion is the Jaeger release tools/go.mod pins (its tool
// directive); JAEGER_BIN may name a prebuilt binary instead.
const jaegerVersion = "v1.76.0"

// jaegerBinary returns JAEGER_BIN, or builds Jaeger from the tools module
// with "go tool -n", which caches the linked binary in the build cache and
// prints its path.
func jaegerBinary(ctx context.Context, goBin string) (string, error) {
	if b := os.Getenv("JAEGER_BIN"); b != "" {
		return b, nil
	}
	tools, err := filepath.Abs("tools")
	if err != nil {
		return "", err
	}
	out, err := build(ctx, tools, cleanEnv(), goBin, "tool", "-n", "jaeger")
	if err != nil {
		return "", fmt.Errorf("go tool -n jaeger (in %s): %v\n%s", tools, err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1], nil
}

// jaegerServer is a Jaeger all-in-one process: OTLP in, query API out.
type jaegerServer struct {
	otlpHTTP string // host:port of the OTLP/HTTP receiver
	query    string // base URL of the query API
	proc     *proc
}

func startJaeger(t *testing.T, ps *procs, bin string) *jaegerServer {
	t.Helper()
	config, err := filepath.Abs(filepath.Join("testdata", "jaeger.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	otlpHTTP, otlpGRPC, query := freePort(t), freePort(t), freePort(t)
	env := cleanEnv(
		"JAEGER_OTLP_HTTP_PORT="+strconv.Itoa(otlpHTTP),
		"JAEGER_OTLP_GRPC_PORT="+strconv.Itoa(otlpGRPC),
		"JAEGER_QUERY_HTTP_PORT="+strconv.Itoa(query),
	)
	j := &jaegerServer{
		otlpHTTP: fmt.Sprintf("127.0.0.1:%d", otlpHTTP),
		query:    fmt.Sprintf("http://127.0.0.1:%d", query),
	}
	j.proc = ps.start(t, "jaeger", env, bin, "--config", config)
	return j
}

// ready: the query API answers and the OTLP receiver (started after the
// query extension) accepts connections.
func (j *jaegerServer) ready(ctx context.Context) error {
	if err := httpOK(ctx, j.query+"/api/services"); err != nil {
		return err
	}
	return tcpOpen(j.otlpHTTP)
}

// jaegerTrace is a trace of Jaeger's query API (/api/traces): parents are
// CHILD_OF references, attributes are tags, the service is the process's.
type jaegerTrace struct {
	TraceID string       `json:"traceID"`
	Spans   []jaegerSpan `json:"spans"`
	Process map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

type jaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags []struct {
		Key   string `json:"key"`
		Type  string `json:"type"`
		Value any    `json:"value"`
	} `json:"tags"`
	ProcessID string `json:"processID"`
}

// tag returns the value of the tag key and whether the span has it.
func (s jaegerSpan) tag(key string) (any, bool) {
	for _, t := range s.Tags {
		if t.Key == key {
			return t.Value, true
		}
	}
	return nil, false
}

func (s jaegerSpan) tagString(key string) string {
	v, _ := s.tag(key)
	str, _ := v.(string)
	return str
}

// parent returns the CHILD_OF parent's span id, or "" for a root span.
func (s jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

func (j *jaegerServer) get(ctx context.Context, path string, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.query+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Code int    `json:"code"`
			Msg  string `json:"msg"`
		} `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return resp.StatusCode, fmt.Errorf("GET %s: %s: %v", path, resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || len(body.Errors) > 0 {
		return resp.StatusCode, fmt.Errorf("GET %s: %s: %+v", path, resp.Status, body.Errors)
	}
	return resp.StatusCode, json.Unmarshal(body.Data, v)
}

// search returns up to limit traces of service whose spans have the tags.
func (j *jaegerServer) search(ctx context.Context, service string, tags map[string]string, limit int) ([]jaegerTrace, error) {
	q := url.Values{"service": {service}, "limit": {strconv.Itoa(limit)}, "lookback": {"1h"}}
	if len(tags) > 0 {
		b, _ := json.Marshal(tags)
		q.Set("tags", string(b))
	}
	var traces []jaegerTrace
	_, err := j.get(ctx, "/api/traces?"+q.Encode(), &traces)
	return traces, err
}

// trace returns the trace id, or found=false when Jaeger does not have it.
func (j *jaegerServer) trace(ctx context.Context, id string) (tr jaegerTrace, found bool, err error) {
	var traces []jaegerTrace
	code, err := j.get(ctx, "/api/traces/"+id, &traces)
	if code == http.StatusNotFound {
		return tr, false, nil
	}
	if err != nil {
		return tr, false, err
	}
	if len(traces) != 1 {
		return tr, false, fmt.Errorf("trace %s: %d traces", id, len(traces))
	}
	return traces[0], true, nil
}

// waitTrace polls for the trace id until timeout (spans are exported in
// batches).
func (j *jaegerServer) waitTrace(ctx context.Context, id string, timeout time.Duration) (jaegerTrace, error) {
	deadline := time.Now().Add(timeout)
	for {
		tr, found, err := j.trace(ctx, id)
		if err != nil {
			return tr, err
		}
		if found {
			return tr, nil
		}
		if time.Now().After(deadline) {
			return tr, fmt.Errorf("trace %s not in Jaeger after %v", id, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
