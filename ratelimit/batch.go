package ratelimit

import (
	"context"
	"fmt"
)

// Request is one decision asked of BatchAllow: who spends, and how much.
type Request struct {
	// Identity is the identity that spends, as for AllowN.
	Identity string
	// Cost is what it spends, as for AllowN: 0 to the burst.
	Cost int64
}

// BatchAllow decides every request of reqs in one round trip: the requests
// go to Redis as one pipeline of script calls (one per Redis node on a
// Cluster), instead of a round trip each. It is for callers that already hold
// many decisions at once, such as a gateway checking a batch of requests or
// a job admitting a batch of work items.
//
// results[i] is the decision on reqs[i], as AllowN(ctx, reqs[i].Identity,
// reqs[i].Cost) would have made it with the limiter's algorithm (shadow
// mode included), and is published as an Event of its own. Each decision is
// atomic on its own, and decisions on the same identity are made in the
// order of reqs; the batch as a whole is not atomic: one request may be
// allowed and the next denied (a MultiLimiter checks several limits
// all-or-nothing).
//
// Bad input in any request (a cost out of range, an empty or overlong
// identity) returns nil results and an error wrapping ErrInvalidCost or
// ErrInvalidIdentity that names the request's index; nothing is then
// decided or published. When Redis fails, each request it did not decide
// gets the FailStrategy's Result (its Reason says so) and an Event carrying
// its error, and the returned error is the first such *BackendError. The
// whole batch shares one backend timeout (WithTimeout). An empty reqs returns
// no results and no error.
//
// The results slice is new and belongs to the caller; reqs is not retained.
func (l *Limiter) BatchAllow(ctx context.Context, reqs []Request) ([]Result, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	keys := make([]string, len(reqs))
	for i, r := range reqs {
		if err := l.checkCost(r.Cost); err != nil {
			return nil, fmt.Errorf("%w (request %d)", err, i)
		}
		k, err := l.keys.key(r.Identity)
		if err != nil {
			return nil, fmt.Errorf("%w (request %d)", err, i)
		}
		keys[i] = k
	}
	ds := make([]*decision, len(reqs))
	for i, r := range reqs {
		ds[i] = l.decision(keys[i], r.Cost, modeSpend, nil)
	}
	start := l.e.startTimer()
	// For the breaker the batch is one call: it failed when it did not come
	// back or any of its decisions found Redis unavailable.
	back := false // the round trip came back: each decision has its outcome
	failed := l.e.guard(ctx, func() *BackendError {
		if err := l.e.runDecisions(ctx, ds); err != nil {
			return err
		}
		back = true
		for _, d := range ds {
			if d.err != nil {
				if be := newBackendError(d.err); breakerOutcome(be, false) == outcomeFailure {
					return be
				}
			}
		}
		return nil
	})

	results := make([]Result, len(reqs))
	var first error
	for i, d := range ds {
		res, berr := Result{}, failed
		if back {
			res, berr = l.result(d)
		}
		var err error
		results[i], err = l.e.finish(ctx, decided{alg: l.alg, key: keys[i], cost: reqs[i].Cost, limit: l.limit}, start, res, berr)
		if err != nil && first == nil {
			first = err
		}
	}
	return results, first
}
