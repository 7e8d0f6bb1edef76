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
	keys := make([][]string, len(reqs))
	for i, r := range reqs {
		if err := l.checkCost(r.Cost); err != nil {
			return nil, fmt.Errorf("%w (request %d)", err, i)
		}
		k, err := l.keysOf(r.Identity, new([1]string))
		if err != nil {
			return nil, fmt.Errorf("%w (request %d)", err, i)
		}
		keys[i] = k
	}
	type outcome struct {
		res   Result
		berr  *BackendError
		shard int // index of the shard that decided
		first int // the shard the request starts at
	}
	out := make([]outcome, len(reqs))
	pending := make([]int, len(reqs)) // requests not decided yet
	for i := range pending {
		pending[i] = i
		if l.shards > 1 {
			out[i].first = firstShard(l.shards)
		}
	}
	start := l.e.startTimer()
	// One round trip per round: each request asks one shard (its only key,
	// unsharded); a request denied asks its next shard in the next round,
	// up to l.tries rounds.
	for t := 0; t < l.tries && len(pending) > 0; t++ {
		ds := make([]*decision, len(pending))
		for j, i := range pending {
			s := (out[i].first + t) % len(keys[i])
			ds[j] = l.decision(keys[i][s], s, reqs[i].Cost, modeSpend, nil)
		}
		back, failed := l.roundOf(ctx, ds)
		next := pending[:0]
		for j, i := range pending {
			s := (out[i].first + t) % len(keys[i])
			if !back {
				out[i].berr, out[i].shard = failed, s
				continue
			}
			res, berr := l.result(ds[j])
			res.shard = l.shardNo(s)
			switch {
			case berr != nil:
				out[i].berr, out[i].shard = berr, s
			case res.Allowed:
				out[i].res, out[i].shard = res, s
			default:
				if t == 0 || res.RetryAfter < out[i].res.RetryAfter {
					out[i].res, out[i].shard = res, s
				}
				next = append(next, i)
			}
		}
		pending = next
	}

	results := make([]Result, len(reqs))
	var first error
	for i, o := range out {
		d := decided{alg: l.alg, key: keys[i][o.shard], cost: reqs[i].Cost, limit: l.limit, shard: l.shardNo(o.shard)}
		var err error
		results[i], err = l.e.finish(ctx, d, start, o.res, o.berr)
		if err != nil && first == nil {
			first = err
		}
	}
	return results, first
}

// roundOf sends ds in one round trip through the breaker, for which the
// round is one call: it failed when it did not come back or any of its
// decisions found Redis unavailable. back says whether the round trip came
// back, so that each decision holds its own outcome; if not, failed is
// every decision's error.
func (l *Limiter) roundOf(ctx context.Context, ds []*decision) (back bool, failed *BackendError) {
	failed = l.e.guard(ctx, func() *BackendError {
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
	return back, failed
}
