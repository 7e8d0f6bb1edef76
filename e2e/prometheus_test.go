package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrapeInterval is how often the test's Prometheus servers scrape and
// evaluate rules: often, so that a short run has enough samples.
const scrapeInterval = time.Second

// scrapeJob is a job of the Prometheus configuration.
type scrapeJob struct {
	name    string
	targets []string
}

// promServer is a prometheus process and its HTTP API.
type promServer struct {
	name   string
	url    string
	native bool
	proc   *proc
}

// startPrometheus starts Debian's prometheus on a free loopback port,
// scraping the targets (host:port) of each job and evaluating rulesFile.
// native turns on the native-histograms feature: Prometheus 2.42 then
// scrapes protobuf and keeps only the native histogram of a histogram that
// has one (no classic _bucket series, no exemplars).
func startPrometheus(t *testing.T, ps *procs, bin, name string, native bool, jobs []scrapeJob, rulesFile string) *promServer {
	t.Helper()
	dir := filepath.Join(ps.dir, name)
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	var scrape strings.Builder
	for _, j := range jobs {
		quoted := make([]string, len(j.targets))
		for i, tg := range j.targets {
			quoted[i] = strconv.Quote(tg)
		}
		fmt.Fprintf(&scrape, "  - job_name: %s\n    static_configs:\n      - targets: [%s]\n", strconv.Quote(j.name), strings.Join(quoted, ", "))
	}
	config := fmt.Sprintf(`global:
  scrape_interval: %[1]s
  scrape_timeout: 900ms
  evaluation_interval: %[1]s
rule_files:
  - %[2]s
scrape_configs:
%[3]s`, scrapeInterval, strconv.Quote(rulesFile), scrape.String())
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	args := []string{
		"--config.file=" + cfg,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port),
		"--enable-feature=exemplar-storage",
	}
	if native {
		args = append(args, "--enable-feature=native-histograms")
	}
	p := &promServer{name: name, url: fmt.Sprintf("http://127.0.0.1:%d", port), native: native}
	p.proc = ps.start(t, name, cleanEnv(), bin, args...)
	return p
}

func (p *promServer) ready(ctx context.Context) error { return httpOK(ctx, p.url+"/-/ready") }

// apiResponse is the envelope of every Prometheus API answer.
type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
}

// api sends a form POST (or GET without form) to the API path and decodes
// data into v.
func (p *promServer) api(ctx context.Context, path string, form url.Values, v any) error {
	var req *http.Request
	var err error
	if form == nil {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, p.url+path, nil)
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, p.url+path, strings.NewReader(form.Encode()))
		if req != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	}
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("%s %s: %s: %v", p.name, path, resp.Status, err)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s %s: %s: %s", p.name, path, r.ErrorType, r.Error)
	}
	if len(r.Warnings) > 0 {
		return fmt.Errorf("%s %s: warnings %v", p.name, path, r.Warnings)
	}
	return json.Unmarshal(r.Data, v)
}

// series is one series of a query result; Values, Value (floats) or
// Histogram/Histograms (native) hold its samples.
type series struct {
	Metric     map[string]string `json:"metric"`
	Value      []any             `json:"value"`
	Values     [][]any           `json:"values"`
	Histogram  []any             `json:"histogram"`
	Histograms [][]any           `json:"histograms"`
}

type queryResult struct {
	ResultType string   `json:"resultType"`
	Result     []series `json:"result"`
}

func promTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

// query evaluates expr at the instant at.
func (p *promServer) query(ctx context.Context, expr string, at time.Time) (queryResult, error) {
	var r queryResult
	err := p.api(ctx, "/api/v1/query", url.Values{"query": {expr}, "time": {promTime(at)}}, &r)
	return r, err
}

// queryRange evaluates expr from start to end every step, as a Grafana
// time-series panel does.
func (p *promServer) queryRange(ctx context.Context, expr string, start, end time.Time, step time.Duration) (queryResult, error) {
	var r queryResult
	err := p.api(ctx, "/api/v1/query_range", url.Values{
		"query": {expr}, "start": {promTime(start)}, "end": {promTime(end)},
		"step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	}, &r)
	return r, err
}

// scalar evaluates expr at at and returns its single value (0 without
// series).
func (p *promServer) scalar(ctx context.Context, expr string, at time.Time) (float64, error) {
	r, err := p.query(ctx, expr, at)
	if err != nil {
		return 0, err
	}
	switch len(r.Result) {
	case 0:
		return 0, nil
	case 1:
		if len(r.Result[0].Value) != 2 {
			return 0, fmt.Errorf("%s: %q: not a float sample: %+v", p.name, expr, r.Result[0])
		}
		s, _ := r.Result[0].Value[1].(string)
		return strconv.ParseFloat(s, 64)
	default:
		return 0, fmt.Errorf("%s: %q: %d series, want one", p.name, expr, len(r.Result))
	}
}

// labelValues lists the values of label on the series of match.
func (p *promServer) labelValues(ctx context.Context, label, match string) ([]string, error) {
	var v []string
	err := p.api(ctx, "/api/v1/label/"+label+"/values?"+url.Values{"match[]": {match}}.Encode(), nil, &v)
	return v, err
}

type exemplarSeries struct {
	SeriesLabels map[string]string `json:"seriesLabels"`
	Exemplars    []struct {
		Labels    map[string]string `json:"labels"`
		Value     string            `json:"value"`
		Timestamp float64           `json:"timestamp"`
	} `json:"exemplars"`
}

// exemplars returns the exemplars of the series expr selects, as Grafana's
// exemplar query does.
func (p *promServer) exemplars(ctx context.Context, expr string, start, end time.Time) ([]exemplarSeries, error) {
	var v []exemplarSeries
	err := p.api(ctx, "/api/v1/query_exemplars", url.Values{
		"query": {expr}, "start": {promTime(start)}, "end": {promTime(end)},
	}, &v)
	return v, err
}

type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Name      string            `json:"name"`
			Query     string            `json:"query"`
			Duration  float64           `json:"duration"`
			Labels    map[string]string `json:"labels"`
			Health    string            `json:"health"`
			LastError string            `json:"lastError"`
			Type      string            `json:"type"`
			State     string            `json:"state"`
		} `json:"rules"`
	} `json:"groups"`
}

func (p *promServer) rules(ctx context.Context) (ruleGroups, error) {
	var v ruleGroups
	err := p.api(ctx, "/api/v1/rules", nil, &v)
	return v, err
}
