package httplimit

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// KeyFunc returns the identity a request is limited as: a client address,
// an API key, a user or tenant id. The identity is hashed by the limiter
// before it reaches Redis and is never logged. An error (for a missing
// identity, wrap ErrNoIdentity) sends the request to the Middleware's error
// handler instead of the limiter.
//
// Keep identities from different sources apart: the built-in KeyFuncs
// prefix theirs ("ip:", "x-api-key:"), so that a client cannot spend
// another's limit by sending its address as an API key.
type KeyFunc func(r *http.Request) (string, error)

// KeyByIP is the default KeyFunc: the socket address of the client, with
// IPv6 grouped by /64; no header is trusted. Behind proxies use
// NewClientIP(TrustProxies(...)).Key instead.
func KeyByIP(r *http.Request) (string, error) { return defaultClientIP.Key(r) }

// KeyByHeader returns a KeyFunc reading the identity from the header name
// (the first line of it), such as an API key in X-API-Key. The identity is
// the lower-case header name, ':' and the value. A missing or empty header
// is an error wrapping ErrNoIdentity.
//
// A header is whatever the client sent: check the key is valid (in the
// KeyFunc, or in an authentication middleware before this one), or a
// client can rotate made-up keys to get a fresh limit each time.
func KeyByHeader(name string) KeyFunc {
	canon := http.CanonicalHeaderKey(name)
	prefix := strings.ToLower(canon) + ":"
	return func(r *http.Request) (string, error) {
		v := strings.TrimSpace(r.Header.Get(canon))
		if v == "" {
			return "", fmt.Errorf("%w: header %s is missing or empty", ErrNoIdentity, canon)
		}
		return prefix + v, nil
	}
}

// FirstOf returns a KeyFunc that tries keys in order and returns the first
// identity found: FirstOf(KeyByHeader("X-API-Key"), KeyByIP) limits API
// clients by key and the others by address. A key returning an error
// wrapping ErrNoIdentity passes to the next one; any other error stops the
// search and is returned.
func FirstOf(keys ...KeyFunc) KeyFunc {
	keys = append([]KeyFunc(nil), keys...)
	return func(r *http.Request) (string, error) {
		err := fmt.Errorf("%w: no key function", ErrNoIdentity)
		for _, k := range keys {
			var id string
			if id, err = k(r); err == nil {
				return id, nil
			}
			if !errors.Is(err, ErrNoIdentity) {
				return "", err
			}
		}
		return "", err
	}
}

// CostFunc returns the cost of a request: 1 for a request, its size in
// bytes, the LLM tokens it declares. An error sends the request to the
// Middleware's error handler (a 400 by default); a cost above the limit's
// burst could never be allowed and is an error too.
type CostFunc func(r *http.Request) (int64, error)

// ErrInvalidCost reports a request whose cost cannot be known: a missing
// Content-Length for CostByContentLength, or a declared cost that is not a
// non-negative integer.
// It wraps ratelimit.ErrInvalidCost, so that either sentinel matches.
var ErrInvalidCost = fmt.Errorf("%w: from the request", ratelimit.ErrInvalidCost)

// CostByContentLength costs a request its body size in bytes, from
// Content-Length (quota unit "content-bytes", see WithQuotaUnit). A body of
// unknown length (chunked) is an error wrapping ErrInvalidCost.
func CostByContentLength(r *http.Request) (int64, error) {
	if r.ContentLength < 0 {
		return 0, fmt.Errorf("%w: the request has no Content-Length", ErrInvalidCost)
	}
	return r.ContentLength, nil
}

// CostByQuery returns a CostFunc reading the cost from the query parameter
// name, such as the max_tokens an LLM call asks for, or def when the
// parameter is absent. A value that is not a non-negative integer is an
// error wrapping ErrInvalidCost.
func CostByQuery(name string, def int64) CostFunc {
	return func(r *http.Request) (int64, error) {
		v := r.URL.Query().Get(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%w: query parameter %s must be a non-negative integer", ErrInvalidCost, name)
		}
		return n, nil
	}
}
