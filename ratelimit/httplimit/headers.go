package httplimit

import (
	"encoding/base64"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// HeaderStyle selects which rate-limit header fields responses carry.
// Retry-After is sent on every 429 and 503 whatever the style.
type HeaderStyle uint8

const (
	// StyleDraft11 (the default) sends the two Structured Field lists of
	// draft-ietf-httpapi-ratelimit-headers-11:
	//
	//	RateLimit-Policy: "api";q=20;w=10
	//	RateLimit: "api";r=19;t=1
	//
	// Both are added (not set), so that stacked middlewares list one
	// policy each.
	StyleDraft11 HeaderStyle = iota
	// StyleLegacy sends RateLimit-Limit, RateLimit-Remaining and
	// RateLimit-Reset (delta seconds), as drafts up to -06 did.
	StyleLegacy
	// StyleXRateLimit sends X-RateLimit-Limit, X-RateLimit-Remaining and
	// X-RateLimit-Reset, with Reset in delta seconds (not an epoch).
	StyleXRateLimit
	// StyleNone sends no rate-limit header field.
	StyleNone
)

var styleNames = [...]string{"draft11", "legacy", "x-ratelimit", "none"}

// String returns "draft11", "legacy", "x-ratelimit" or "none".
func (s HeaderStyle) String() string {
	if int(s) < len(styleNames) {
		return styleNames[s]
	}
	return "unknown"
}

// ParseHeaderStyle parses the String form of a HeaderStyle (for flags and
// configuration files). An unknown name is an error wrapping
// ratelimit.ErrInvalidOption.
func ParseHeaderStyle(name string) (HeaderStyle, error) {
	for i, n := range styleNames {
		if strings.EqualFold(name, n) {
			return HeaderStyle(i), nil
		}
	}
	return 0, fmt.Errorf("%w: httplimit: unknown header style %q (want one of %s)", ratelimit.ErrInvalidOption, name, strings.Join(styleNames[:], ", "))
}

// Header field names, as the styles send them.
const (
	// HeaderRateLimitPolicy is draft-11's list of quota policies.
	HeaderRateLimitPolicy = "RateLimit-Policy"
	// HeaderRateLimit is draft-11's list of current service limits.
	HeaderRateLimit = "RateLimit"
	// HeaderRateLimitLimit is StyleLegacy's quota (the burst).
	HeaderRateLimitLimit = "RateLimit-Limit"
	// HeaderRateLimitRemaining is StyleLegacy's available quota.
	HeaderRateLimitRemaining = "RateLimit-Remaining"
	// HeaderRateLimitReset is StyleLegacy's reset, in delta seconds.
	HeaderRateLimitReset = "RateLimit-Reset"
	// HeaderXRateLimitLimit is StyleXRateLimit's quota (the burst).
	HeaderXRateLimitLimit = "X-RateLimit-Limit"
	// HeaderXRateLimitRemain is StyleXRateLimit's available quota.
	HeaderXRateLimitRemain = "X-RateLimit-Remaining"
	// HeaderXRateLimitReset is StyleXRateLimit's reset, in delta seconds.
	HeaderXRateLimitReset = "X-RateLimit-Reset"
	// HeaderRetryAfter is sent, in whole seconds, on every 429 and 503.
	HeaderRetryAfter = "Retry-After"
)

// The canonical forms of the names, for direct map access ("RateLimit" is
// "Ratelimit" in an http.Header).
var (
	keyPolicy     = http.CanonicalHeaderKey(HeaderRateLimitPolicy)
	keyRateLimit  = http.CanonicalHeaderKey(HeaderRateLimit)
	keyLimit      = http.CanonicalHeaderKey(HeaderRateLimitLimit)
	keyRemaining  = http.CanonicalHeaderKey(HeaderRateLimitRemaining)
	keyReset      = http.CanonicalHeaderKey(HeaderRateLimitReset)
	keyXLimit     = http.CanonicalHeaderKey(HeaderXRateLimitLimit)
	keyXRemaining = http.CanonicalHeaderKey(HeaderXRateLimitRemain)
	keyXReset     = http.CanonicalHeaderKey(HeaderXRateLimitReset)
)

// unitConcurrent is the draft's quota unit for requests in flight.
const unitConcurrent = "concurrent-requests"

// maxSFInteger is the largest Structured Field Integer (15 digits).
const maxSFInteger = 999_999_999_999_999

// ceilSeconds rounds d up to whole seconds, as delay-seconds requires.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return min(s, maxSFInteger)
}

// window is the RateLimit-Policy w of a limit: the seconds an empty bucket
// takes to refill its whole capacity, Capacity × Per / Rate, rounded up, at
// least 1. Then q = Capacity per w is the policy's sustained quota.
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

// resetSeconds is the t of RateLimit and the value of RateLimit-Reset: for a
// denial, when the same cost would fit (equal to Retry-After, as draft-11
// §6 wants); otherwise, when the bucket is full again.
func resetSeconds(res ratelimit.Result) int64 {
	if !res.Allowed {
		return max(ceilSeconds(res.RetryAfter), 1)
	}
	return ceilSeconds(res.ResetAfter)
}

func clampSF(n int64) int64 { return max(0, min(n, maxSFInteger)) }

// sfString serialises s as a Structured Field String. s must be printable
// ASCII (checked at construction).
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

// validSFString reports whether s can be a Structured Field String.
func validSFString(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func sfBytes(b []byte, p []byte) []byte {
	b = append(b, ':')
	b = base64.StdEncoding.AppendEncode(b, p)
	return append(b, ':')
}

// writeHeaders sets the rate-limit fields of style for a decision Redis
// made. pk is the partition key (nil for none). The field values share one
// string and the field slices one array: two allocations per response.
func (m *Middleware) writeHeaders(h http.Header, policy string, res ratelimit.Result, pk []byte) {
	switch m.cfg.style {
	case StyleDraft11:
		var buf [256]byte
		b := m.policyItem(buf[:0], policy, res.Limit)
		if pk != nil {
			b = append(b, ";pk="...)
			b = sfBytes(b, pk)
		}
		split := len(b)
		b = sfString(b, policy)
		b = append(b, ";r="...)
		b = strconv.AppendInt(b, clampSF(res.Remaining), 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, resetSeconds(res), 10)
		if pk != nil {
			b = append(b, ";pk="...)
			b = sfBytes(b, pk)
		}
		both := string(b)
		addField(h, keyPolicy, both[:split])
		addField(h, keyRateLimit, both[split:])
	case StyleLegacy:
		setTrio(h, keyLimit, keyRemaining, keyReset, res)
	case StyleXRateLimit:
		setTrio(h, keyXLimit, keyXRemaining, keyXReset, res)
	}
}

// addField adds one line to field key. A first line gets a slice of its
// own, with room for no more, so that a later Add copies instead of
// writing into memory another field shares.
func addField(h http.Header, key, v string) {
	if old := h[key]; len(old) > 0 {
		h[key] = append(old, v)
		return
	}
	h[key] = []string{v}
}

// setTrio sets the three integer fields of the legacy styles, their slices
// cut from one array.
func setTrio(h http.Header, limit, remaining, reset string, res ratelimit.Result) {
	vals := [3]string{
		strconv.FormatInt(res.Limit.Capacity(), 10),
		strconv.FormatInt(max(res.Remaining, 0), 10),
		strconv.FormatInt(resetSeconds(res), 10),
	}
	arr := new([3]string)
	*arr = vals
	h[limit] = arr[0:1:1]
	h[remaining] = arr[1:2:2]
	h[reset] = arr[2:3:3]
}

// policyItem appends the RateLimit-Policy item of limit l (without pk).
func (m *Middleware) policyItem(b []byte, policy string, l ratelimit.Limit) []byte {
	b = sfString(b, policy)
	b = append(b, ";q="...)
	b = strconv.AppendInt(b, clampSF(l.Capacity()), 10)
	if m.cfg.unit != "" {
		b = append(b, ";qu="...)
		b = sfString(b, m.cfg.unit)
	}
	if m.cfg.unit == unitConcurrent {
		return b // a number of requests in flight has no window
	}
	b = append(b, ";w="...)
	return strconv.AppendInt(b, window(l), 10)
}
