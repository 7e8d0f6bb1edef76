// Package ratelimit is a distributed rate limiter on Redis: one shared limit
// per identity (user, API key, IP address, tenant) across any number of
// application instances, each decision atomic in a Lua script on Redis and
// timed by Redis TIME, so that clock skew between instances does not matter.
//
// A Limiter enforces a Limit:
//
//	lim, err := ratelimit.New(rdb, ratelimit.PerMinute(100).WithBurst(200),
//		ratelimit.WithNamespace("api"))
//	res, err := lim.Allow(ctx, "user:123")
//	if !res.Allowed {
//		// retry after res.RetryAfter
//	}
//
// # Algorithms and features
//
// WithAlgorithm picks how a Limiter counts: TokenBucket (the default),
// SlidingWindow, SlidingLog or FixedWindow; see Algorithm for which to
// choose. Every one gives the same Result and the same Event.
//
// Beyond one limit per identity:
//   - NewConcurrency bounds work in flight (leases with a TTL, weighted,
//     released or expired; no leak when a holder crashes);
//   - NewMulti checks several quotas of one identity all or nothing in one
//     script ("10 a second and 10,000 a day", "requests and tokens");
//   - NewCharger decides charges built per call, each with its own
//     identity, limit and algorithm, all or nothing in one script (the
//     descriptors of an Envoy rate limit request; see Charger for Redis
//     Cluster);
//   - Refund gives back unused cost of a given call (reserve max_tokens,
//     settle with the tokens used), exactly once, never above the burst;
//   - WithLimit overrides the limit per call, for plans and tiers, on the
//     same state;
//   - WithShadow decides and publishes as usual but always allows, for
//     rolling out a limit (Reason "shadow" marks what would have been
//     blocked);
//   - WithDenyCache answers identities that keep calling over their limit
//     from memory until their RetryAfter, without Redis.
//
// A denial is a Result, not an error. Errors mean bad input (wrapping
// ErrInvalidLimit, ErrInvalidCost, ErrInvalidIdentity, ErrInvalidOption...)
// or a Redis failure (*BackendError, wrapping ErrBackend), in which case the
// FailStrategy (FailOpen by default, or FailClosed) has decided the Result;
// a call whose context ended before Redis decided is denied whatever the
// strategy (ReasonCanceled). Every call is bounded by the backend timeout (WithTimeout), also with a
// client that ignores context deadlines. WithBreaker adds an opt-in circuit
// breaker that skips a failing Redis for a cool-down, so that calls fail at
// once instead of at the timeout.
//
// # Keys
//
// State lives under <namespace>:<algorithm>:{<hex sha256(identity)>}, or an
// HMAC-SHA-256 with WithIdentityKey. SlidingLog and the concurrency leases
// add <key>:meta; a MultiLimiter's quotas live under
// <namespace>:<algorithm>:{<hash>}:<quota name>. The raw identity never reaches Redis,
// logs or metrics. The braces are a Redis Cluster hash tag: one identity's
// keys share a slot, and identities spread over all shards. Keys carry a TTL
// and vanish once an identity has been idle long enough to be back at a full
// burst.
//
// # Pipelining
//
// Concurrent calls on one Limiter share round trips, and the decisions
// that go to Redis together are made by one script call per Redis node (per
// slot on a Cluster): calls that arrive while others are on the wire queue
// and go together as soon as a connection is free; a call that finds
// nothing in flight goes out at once, alone. Every call keeps its own
// timeout, cancellation, error, fail-strategy decision and Event. See
// WithPipelining (on by default) and BatchAllow, for callers that hold many
// decisions at once.
//
// # Observability
//
// Every decision is an Event published synchronously on the limiter's bus
// (WithSubscribers, or WithBus to share one);
// the subpackages of telemetry turn events into logs (slog), Prometheus
// metrics and OpenTelemetry spans. Circuit breaker changes (BreakerChange)
// and refunds (RefundEvent) go on the same bus, to the subscribers that
// implement BreakerSubscriber or RefundSubscriber. This package imports
// neither Prometheus nor OpenTelemetry.
package ratelimit
