// Package httplimit is net/http middleware for ratelimit: it finds who
// sent a request and what it costs, asks a Limiter, sends the RateLimit
// header fields, and answers 429 (or 503 when Redis is down and the limiter
// fails closed) with an RFC 9457 problem body.
//
// # A whole mux
//
//	lim, _ := ratelimit.New(rdb, ratelimit.PerMinute(100).WithBurst(200),
//		ratelimit.WithNamespace("api"), ratelimit.WithIdentityKey(secret))
//	mw, _ := httplimit.New(lim) // per client IP, draft-11 headers
//	http.ListenAndServe(":8080", mw.Handler(mux))
//
// chi and gorilla/mux take the same shape: r.Use(mw.Handler).
//
// # One handler
//
//	llm, _ := ratelimit.New(rdb, ratelimit.PerMinute(10_000), ratelimit.WithNamespace("llm"))
//	gen := httplimit.Must(llm,
//		httplimit.WithKey(httplimit.KeyByHeader("X-API-Key")),
//		httplimit.WithCost(httplimit.CostByQuery("tokens", 1)))
//	mux.Handle("POST /v1/generate", gen.HandlerFunc(generate))
//
// When the cost is known only after reading the body, call Admit from the
// handler instead.
//
// # Other limiters
//
// The Middleware needs only a Limiter: AllowN(ctx, identity, cost). A
// ratelimit.MultiLimiter fits through LimiterFunc, and the quota that decided
// names the policy; a ratelimit.ConcurrencyLimiter through Concurrency,
// which holds a lease while the request runs.
//
// # Frameworks and gRPC
//
// This package imports no framework. The module
// github.com/distributed-rate-limiter/ratelimit-go/examples/frameworks
// (examples/frameworks in the repository) wires chi, gorilla/mux, echo and
// gin, with the few lines of adapter echo and gin need, and tests each with
// real requests. gRPC servers use the interceptors of the module
// github.com/distributed-rate-limiter/ratelimit-go/grpclimit.
//
// # Identity
//
// The default KeyFunc, KeyByIP, keys on the socket address and trusts no
// header, so it cannot be spoofed. Behind reverse proxies, say which proxies
// to trust; the client is then the rightmost address in X-Forwarded-For (or
// RFC 7239 Forwarded) that is not one of them, never the leftmost, which the
// client writes itself:
//
//	ip := httplimit.MustClientIP(httplimit.TrustProxies("10.0.0.0/8")) // your proxies' ranges
//	// or, when exactly one proxy stands in front and nothing reaches around it:
//	ip = httplimit.MustClientIP(httplimit.TrustHops(1))
//	mw, _ := httplimit.New(lim, httplimit.WithKey(ip.Key))
//
// IPv6 clients are grouped by /64 (IPv6Prefix changes it), IPv4-mapped
// addresses count as IPv4, and zones are dropped. KeyByHeader keys on an API
// key, FirstOf falls back from one KeyFunc to the next, and any
// func(*http.Request) (string, error) is a KeyFunc. Identities are hashed by
// the limiter (use ratelimit.WithIdentityKey for guessable ones such as IP
// addresses) and never appear in headers, logs or metrics.
//
// A request without an identity (ErrNoIdentity: an unparsable socket
// address, a trusted proxy that wrote "unknown", a missing API key) gets a
// 400 from DefaultErrorHandler. WithErrorHandler changes that. One case is
// counted against the proxy: a trusted proxy that sends no proxy header at
// all is taken to be the client (the socket peer is then the only address
// there is), so make sure your proxies always set it.
//
// # Headers
//
// StyleDraft11 (the default) sends the Structured Fields of
// draft-ietf-httpapi-ratelimit-headers-11:
//
//	RateLimit-Policy: "api";q=200;w=120
//	RateLimit: "api";r=150;t=30
//
// For a token bucket, q is the burst (the bucket's capacity) and w the
// seconds an empty bucket takes to refill it (burst × per / rate, rounded
// up), so q per w is the sustained rate; r is the cost that could be spent
// now; t is, after an allowed request, the seconds until the bucket is full
// again, and after a denied one, the seconds until the same cost would fit
// (equal to Retry-After). StyleLegacy sends RateLimit-Limit (q),
// RateLimit-Remaining (r) and RateLimit-Reset (t, delta seconds);
// StyleXRateLimit the same under X-RateLimit-*; StyleNone nothing.
// Retry-After is on every 429 and 503. WithPartitionKey adds an opaque pk.
//
// When Redis fails and the limiter fails open, requests pass and carry no
// rate-limit header: the quota's state is unknown and a made-up one would
// mislead clients. The Decision in the request context (FromContext) and
// the limiter's event bus say ReasonFailOpen.
package httplimit
