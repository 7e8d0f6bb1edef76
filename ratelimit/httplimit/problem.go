package httplimit

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// Problem types of draft-ietf-httpapi-ratelimit-headers-11 §5.
const (
	// ProblemQuotaExceeded is the problem type of a 429 sent because a
	// quota was exceeded.
	ProblemQuotaExceeded = "https://iana.org/assignments/http-problem-types#quota-exceeded"
	// ProblemTemporaryReducedCapacity is the problem type of a 503 sent
	// because the limiter's backend failed under FailClosed.
	ProblemTemporaryReducedCapacity = "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
)

// ProblemContentType is the media type of RFC 9457 problem details.
const ProblemContentType = "application/problem+json"

// Problem is an RFC 9457 problem details object, as the default handlers
// write it.
type Problem struct {
	// Type is a URI naming the kind of problem; "about:blank" when the
	// status code says it all.
	Type string `json:"type"`
	// Title is a short summary of the kind of problem.
	Title string `json:"title"`
	// Status is the HTTP status code.
	Status int `json:"status"`
	// Detail explains this occurrence.
	Detail string `json:"detail,omitempty"`
	// ViolatedPolicies names the policies whose quota was exceeded
	// (draft-11's extension member).
	ViolatedPolicies []string `json:"violated-policies,omitempty"`
}

// WriteProblem writes p as the response: Content-Type
// application/problem+json, status p.Status, and p as JSON.
func WriteProblem(w http.ResponseWriter, p Problem) {
	body, err := json.Marshal(p)
	if err != nil { // cannot happen: only strings and ints
		http.Error(w, http.StatusText(p.Status), p.Status)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ProblemContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(body, '\n'))
}

// DefaultDeniedHandler answers a denied request: 429 with a
// quota-exceeded problem when the quota denied it, 503 with a
// temporary-reduced-capacity problem when Redis did not decide (it failed
// under FailClosed, or the request's context ended first: ReasonCanceled).
// It reads the Decision from the request's context.
func DefaultDeniedHandler(w http.ResponseWriter, r *http.Request) {
	d, _ := FromContext(r.Context())
	policy := d.Policy
	if policy == "" {
		policy = DefaultPolicy
	}
	if d.Result.Reason == ratelimit.ReasonFailClosed || d.Result.Reason == ratelimit.ReasonCanceled {
		WriteProblem(w, Problem{
			Type:             ProblemTemporaryReducedCapacity,
			Title:            "Temporary Reduced Capacity",
			Status:           http.StatusServiceUnavailable,
			Detail:           "The rate limiter cannot decide at the moment; retry later.",
			ViolatedPolicies: []string{policy},
		})
		return
	}
	retry := max(ceilSeconds(d.Result.RetryAfter), 1)
	WriteProblem(w, Problem{
		Type:             ProblemQuotaExceeded,
		Title:            "Quota Exceeded",
		Status:           http.StatusTooManyRequests,
		Detail:           fmt.Sprintf("Quota of policy %q exceeded (cost %d); retry in %d s.", policy, d.Cost, retry),
		ViolatedPolicies: []string{policy},
	})
}

// DefaultErrorHandler answers a request that cannot be decided with 400
// Bad Request and an about:blank problem whose detail is err's message.
// The package's own messages never contain the identity.
func DefaultErrorHandler(w http.ResponseWriter, _ *http.Request, err error) {
	WriteProblem(w, Problem{
		Type:   "about:blank",
		Title:  "Bad Request",
		Status: http.StatusBadRequest,
		Detail: err.Error(),
	})
}
