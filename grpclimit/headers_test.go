package grpclimit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit/httplimit"
)

// TestMetadataMatchesHTTP: the metadata carries, for the same decision,
// exactly the fields httplimit's StyleDraft11 sends over HTTP (the
// formatting is repeated here rather than exported from httplimit; this
// test keeps the two from drifting apart).
func TestMetadataMatchesHTTP(t *testing.T) {
	hour := ratelimit.PerHour(2)
	for _, res := range []ratelimit.Result{
		{Allowed: true, Limit: hour, Remaining: 1, ResetAfter: 30 * time.Minute},
		{Allowed: true, Limit: hour, Remaining: 0, ResetAfter: time.Hour - time.Microsecond},
		{Allowed: false, Limit: hour, Remaining: 0, RetryAfter: 1500 * time.Millisecond, ResetAfter: time.Hour},
		{Allowed: false, Limit: hour, RetryAfter: time.Microsecond},
		{Allowed: false, Limit: hour}, // retry-after and t at least 1
		{Allowed: true, Reason: ratelimit.ReasonShadow, Limit: hour, RetryAfter: time.Second, ResetAfter: time.Hour},
		{Allowed: true, Limit: ratelimit.PerSecond(1000).WithBurst(10), Remaining: 9},           // w rounded up to 1
		{Allowed: true, Limit: ratelimit.PerDay(7).WithBurst(1 << 50), Remaining: 1 << 50},      // large numbers
		{Allowed: true, Limit: ratelimit.PerMinute(5), Remaining: -3, ResetAfter: -time.Second}, // clamped at 0
		{Allowed: true, Limit: ratelimit.PerMinute(5), Remaining: 4, Quota: `da"y\`},            // a quoted name
	} {
		lim := LimiterFunc(func(context.Context, string, int64) (ratelimit.Result, error) { return res, nil })
		mw := httplimit.Must(lim, httplimit.WithPolicyName("api"))
		w := httptest.NewRecorder()
		mw.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))

		rl := Must(lim, WithPolicyName("api"))
		md := rl.metadata(rl.policyOf(res), res)
		for _, pair := range [][2]string{
			{httplimit.HeaderRateLimitPolicy, MDRateLimitPolicy},
			{httplimit.HeaderRateLimit, MDRateLimit},
			{httplimit.HeaderRetryAfter, MDRetryAfter},
		} {
			want, got := w.Header().Values(pair[0]), md.Get(pair[1])
			if len(want) != len(got) || (len(want) == 1 && want[0] != got[0]) {
				t.Errorf("%+v: %s %q, but HTTP's %s is %q", res, pair[1], got, pair[0], want)
			}
		}
	}
}
