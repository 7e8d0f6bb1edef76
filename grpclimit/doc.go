// Package grpclimit is gRPC server middleware for ratelimit: unary and
// stream interceptors that find who is calling and what the call costs, ask
// a Limiter, send the RateLimit fields as response header metadata, and
// answer a denied call with codes.ResourceExhausted (or codes.Unavailable
// when Redis is down and the limiter fails closed).
//
// It is a module of its own, so that the library's go.mod does not grow
// with gRPC.
//
//	lim, _ := ratelimit.New(rdb, ratelimit.PerMinute(100), ratelimit.WithNamespace("api"))
//	rl, _ := grpclimit.New(lim,
//		grpclimit.WithKey(grpclimit.FirstOf(grpclimit.KeyByMetadata("x-api-key"), grpclimit.KeyByPeer)),
//		grpclimit.WithExempt("/grpc.health.v1.Health/"))
//	srv := grpc.NewServer(
//		grpc.ChainUnaryInterceptor(rl.Unary()),
//		grpc.ChainStreamInterceptor(rl.Stream()))
//
// # What a call gets
//
//   - allowed: the handler runs with the Decision in its context
//     (FromContext), and the response headers carry
//     ratelimit-policy: "api";q=100;w=60 and ratelimit: "api";r=99;t=1, the
//     fields of draft-ietf-httpapi-ratelimit-headers-11 as httplimit sends
//     them over HTTP;
//   - denied by the quota: codes.ResourceExhausted, whose details hold an
//     errdetails.RetryInfo (how long until the same cost would fit) and an
//     errdetails.QuotaFailure naming the policy (QuotaId) and its capacity
//     (QuotaValue); the headers add retry-after in whole seconds;
//   - Redis failing under ratelimit.FailClosed: codes.Unavailable with a
//     RetryInfo (WithUnavailableRetryAfter), not ResourceExhausted: the
//     caller did nothing wrong;
//   - Redis failing under ratelimit.FailOpen: the handler runs, with no
//     rate-limit metadata (the quota's state is unknown); the Decision says
//     ReasonFailOpen;
//   - no identity, or a cost that cannot be known or could never be
//     allowed: codes.InvalidArgument, and the limiter is not asked (a
//     KeyFunc or CostFunc may return a status error of its own, such as
//     codes.Unauthenticated, which is passed on as it is);
//   - the caller gone (its context canceled or past its deadline) before
//     the limiter answered, which the limiter reports as
//     ratelimit.ReasonCanceled: codes.Canceled or codes.DeadlineExceeded,
//     and the handler does not run.
//
// A stream is decided once, when it opens (its CostFunc gets a nil
// request); to charge per message, call Admit from the handler.
//
// # Identity
//
// KeyByPeer (the default) keys on the address of the connection's peer, as
// httplimit.KeyByIP does on HTTP's: "ip:203.0.113.9/32", IPv6 grouped by
// /64. Behind an L7 proxy or load balancer the peer is the proxy, so key on
// something the proxy or an authentication interceptor vouches for instead.
// KeyByMetadata keys on a metadata entry such as an API key, "x-api-key:"
// and the value, the same identity as httplimit.KeyByHeader("X-API-Key"),
// so one limiter can share a client's quota between HTTP and gRPC.
// Identities are hashed by the limiter (use ratelimit.WithIdentityKey for
// guessable ones) and never appear in statuses, metadata or logs.
package grpclimit
