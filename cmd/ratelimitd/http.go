package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protojson"
)

var zeroTime time.Time

// maxBody bounds a request body: a rate limit request is small.
const maxBody = 1 << 20

// httpAPI serves POST /json (Envoy's request as JSON, as envoyproxy/ratelimit
// does), the REST API under /v1/, /metrics, /healthz and /readyz.
type httpAPI struct {
	svc   *Service
	style HeaderStyle
	rdb   redis.UniversalClient
	reg   *prometheus.Registry
}

func (h *httpAPI) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /json", h.envoyJSON)
	mux.HandleFunc("POST /v1/check", h.rest(ModeCheck, "check"))
	mux.HandleFunc("POST /v1/peek", h.rest(ModePeek, "peek"))
	mux.HandleFunc("POST /v1/refund", h.rest(ModeRefund, "refund"))
	mux.HandleFunc("POST /v1/reset", h.rest(ModeReset, "reset"))
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{EnableOpenMetrics: true, Registry: h.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", h.ready)
	return mux
}

// ready is 200 when a configuration is loaded and Redis answers a PING
// within a second, else 503 with the reason.
func (h *httpAPI) ready(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !h.svc.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "no configuration loaded\n")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	if err := h.rdb.Ping(ctx).Err(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "redis: unavailable\n")
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// envoyJSON takes a RateLimitRequest as protobuf JSON and answers the
// RateLimitResponse as protobuf JSON: 200 when OK, 429 when over the limit.
func (h *httpAPI) envoyJSON(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		h.problem(w, "json", http.StatusBadRequest, "reading the body: "+err.Error())
		return
	}
	var req rlsv3.RateLimitRequest
	if err := protojson.Unmarshal(body, &req); err != nil {
		h.problem(w, "json", http.StatusBadRequest, "not a RateLimitRequest: "+err.Error())
		return
	}
	in, err := fromProto(&req)
	if err != nil {
		h.problem(w, "json", http.StatusBadRequest, err.Error())
		return
	}
	dec, err := h.svc.Decide(r.Context(), in, ModeCheck, zeroTime)
	if err != nil {
		h.decideError(w, "json", err)
		return
	}
	out, err := protojson.Marshal(toProto(dec, h.style))
	if err != nil {
		h.problem(w, "json", http.StatusInternalServerError, err.Error())
		return
	}
	h.svc.metrics.request("json", codeLabel(dec.Code))
	w.Header().Set("Content-Type", "application/json")
	if dec.Code == CodeOverLimit {
		w.WriteHeader(http.StatusTooManyRequests)
	}
	_, _ = w.Write(out)
}

// restRequest is the body of the REST API's calls.
type restRequest struct {
	Domain      string           `json:"domain"`
	Descriptors []restDescriptor `json:"descriptors"`
	// Cost is the cost of each descriptor without one of its own
	// (default 1). For /v1/refund, what to give back.
	Cost *uint64 `json:"cost,omitempty"`
	// DecidedAtUS is, for /v1/refund, the decided_at_us of the check
	// being refunded.
	DecidedAtUS int64 `json:"decided_at_us,omitempty"`
}

type restDescriptor struct {
	Entries []restEntry `json:"entries"`
	Cost    *uint64     `json:"cost,omitempty"`
	Limit   *struct {
		RequestsPerUnit uint32 `json:"requests_per_unit"`
		Unit            string `json:"unit"`
		UnitMultiplier  uint32 `json:"unit_multiplier,omitempty"`
	} `json:"limit,omitempty"`
}

type restEntry struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type restResponse struct {
	Allowed      bool         `json:"allowed"`
	Code         string       `json:"code"`
	Reason       string       `json:"reason"`
	DecidedAtUS  int64        `json:"decided_at_us,omitempty"`
	RetryAfterMS int64        `json:"retry_after_ms"`
	Descriptors  []restStatus `json:"descriptors"`
}

type restStatus struct {
	Code         string     `json:"code"`
	Limit        *restLimit `json:"limit,omitempty"`
	Remaining    *uint32    `json:"remaining,omitempty"`
	ResetAfterMS int64      `json:"reset_after_ms"`
	Shadow       bool       `json:"shadow,omitempty"`
}

type restLimit struct {
	Name            string `json:"name,omitempty"`
	Descriptor      string `json:"descriptor"`
	RequestsPerUnit uint32 `json:"requests_per_unit"`
	Unit            string `json:"unit"`
	UnitMultiplier  uint32 `json:"unit_multiplier,omitempty"`
	Algorithm       string `json:"algorithm"`
	Burst           int64  `json:"burst"`
}

func (h *httpAPI) rest(mode Mode, api string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
		dec.DisallowUnknownFields()
		var in restRequest
		if err := dec.Decode(&in); err != nil {
			h.problem(w, api, http.StatusBadRequest, "body: "+err.Error())
			return
		}
		req := Request{Domain: in.Domain, Descriptors: make([]Descriptor, len(in.Descriptors))}
		if in.Cost != nil {
			req.Hits = *in.Cost
			if req.Hits == 0 {
				// The REST API's cost 0 is a cost of 0, unlike Envoy's
				// hits_addend: every descriptor reports without charging.
				zero := uint64(0)
				for i := range in.Descriptors {
					if in.Descriptors[i].Cost == nil {
						in.Descriptors[i].Cost = &zero
					}
				}
			}
		}
		for i, d := range in.Descriptors {
			desc := Descriptor{Hits: d.Cost, Entries: make([]Entry, len(d.Entries))}
			for j, e := range d.Entries {
				desc.Entries[j] = Entry(e)
			}
			if d.Limit != nil {
				desc.Override = &Override{RequestsPerUnit: d.Limit.RequestsPerUnit, Unit: strings.ToLower(d.Limit.Unit), Multiplier: d.Limit.UnitMultiplier}
			}
			req.Descriptors[i] = desc
		}
		var spentAt time.Time
		if mode == ModeRefund {
			if in.DecidedAtUS <= 0 {
				h.problem(w, api, http.StatusBadRequest, "decided_at_us: the decided_at_us of the check to refund is required")
				return
			}
			spentAt = time.UnixMicro(in.DecidedAtUS)
		}
		d, err := h.svc.Decide(r.Context(), req, mode, spentAt)
		if err != nil {
			h.decideError(w, api, err)
			return
		}
		out := restResponse{Allowed: d.Code != CodeOverLimit, Code: d.Code.String(), Reason: d.Reason.String(), Descriptors: make([]restStatus, len(d.Statuses))}
		if !d.DecidedAt.IsZero() {
			out.DecidedAtUS = d.DecidedAt.UnixMicro()
		}
		for i, st := range d.Statuses {
			rs := restStatus{Code: st.Code.String(), ResetAfterMS: st.Reset.Milliseconds(), Shadow: st.Shadow}
			if st.Rule != nil && !st.Rule.Unlimited {
				rem := st.Remaining
				rs.Remaining = &rem
				lim := st.Result.Limit
				rs.Limit = &restLimit{Name: st.Rule.Name, Descriptor: st.Rule.Path, RequestsPerUnit: st.Rule.RequestsPerUnit,
					Unit: st.Rule.Unit, Algorithm: st.Rule.Algorithm.String(), Burst: lim.Capacity()}
				if st.Multiplier > 1 {
					rs.Limit.UnitMultiplier = st.Multiplier
				}
			}
			if st.Code == CodeOverLimit && st.Reset.Milliseconds() > out.RetryAfterMS {
				out.RetryAfterMS = st.Reset.Milliseconds()
			}
			out.Descriptors[i] = rs
		}
		if mode == ModeCheck {
			for _, hd := range headers(h.style, d) {
				w.Header().Add(hd.Key, hd.Value)
			}
		}
		h.svc.metrics.request(api, codeLabel(d.Code))
		w.Header().Set("Content-Type", "application/json")
		if mode == ModeCheck && d.Code == CodeOverLimit {
			w.WriteHeader(http.StatusTooManyRequests)
		}
		_ = json.NewEncoder(w).Encode(out)
	}
}

func (h *httpAPI) decideError(w http.ResponseWriter, api string, err error) {
	status := http.StatusServiceUnavailable
	if errors.Is(err, errBadRequest) || strings.HasPrefix(err.Error(), "ratelimit: invalid") {
		status = http.StatusBadRequest
	}
	h.problem(w, api, status, err.Error())
}

// problem writes an RFC 9457 problem.
func (h *httpAPI) problem(w http.ResponseWriter, api string, status int, detail string) {
	h.svc.metrics.request(api, "error")
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": status, "detail": detail})
}
