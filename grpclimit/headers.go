package grpclimit

import (
	"math"
	"strconv"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// Response header metadata keys. gRPC metadata keys are lower case; over
// HTTP/2 they are the header fields of the same names, so a gRPC-Web or
// transcoding proxy passes them on as the HTTP fields httplimit sends.
const (
	// MDRateLimitPolicy is draft-11's RateLimit-Policy: "api";q=100;w=60.
	MDRateLimitPolicy = "ratelimit-policy"
	// MDRateLimit is draft-11's RateLimit: "api";r=99;t=1.
	MDRateLimit = "ratelimit"
	// MDRetryAfter is sent, in whole seconds, with every ResourceExhausted
	// and Unavailable answer of the Interceptor.
	MDRetryAfter = "retry-after"
)

// maxSFInteger is the largest Structured Field Integer (15 digits).
const maxSFInteger = 999_999_999_999_999

// metadata is the response header metadata of a decision Redis made. The
// values are httplimit's StyleDraft11 fields, computed the same way (a
// test compares the two).
func (i *Interceptor) metadata(policy string, res ratelimit.Result) metadata.MD {
	var buf [128]byte
	b := sfString(buf[:0], policy)
	b = append(b, ";q="...)
	b = strconv.AppendInt(b, clampSF(res.Limit.Capacity()), 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, window(res.Limit), 10)
	split := len(b)
	b = sfString(b, policy)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, clampSF(res.Remaining), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, resetSeconds(res), 10)
	both := string(b)
	md := metadata.MD{
		MDRateLimitPolicy: {both[:split]},
		MDRateLimit:       {both[split:]},
	}
	if !res.Allowed {
		md[MDRetryAfter] = []string{strconv.FormatInt(max(ceilSeconds(res.RetryAfter), 1), 10)}
	}
	return md
}

func retryAfterMD(d time.Duration) metadata.MD {
	return metadata.MD{MDRetryAfter: {strconv.FormatInt(max(ceilSeconds(d), 1), 10)}}
}

// window is the w of RateLimit-Policy: the seconds an empty bucket takes
// to refill its whole capacity, rounded up, at least 1, so that q per w is
// the sustained rate.
func window(l ratelimit.Limit) int64 {
	if l.Rate <= 0 {
		return 1
	}
	f := math.Ceil(float64(l.Capacity()) * l.Per.Seconds() / float64(l.Rate))
	if f < 1 {
		return 1
	}
	if f > maxSFInteger {
		return maxSFInteger
	}
	return int64(f)
}

// resetSeconds is the t of RateLimit: after a denial, when the same cost
// would fit (equal to retry-after); otherwise, when the bucket is full
// again.
func resetSeconds(res ratelimit.Result) int64 {
	if !res.Allowed {
		return max(ceilSeconds(res.RetryAfter), 1)
	}
	return ceilSeconds(res.ResetAfter)
}

func clampSF(n int64) int64 { return max(0, min(n, maxSFInteger)) }

// sfString appends s as a Structured Field String; s is printable ASCII
// (validPolicy).
func sfString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// validPolicy reports whether s can be a policy name: 1 to 64 printable
// ASCII characters, a Structured Field String.
func validPolicy(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
