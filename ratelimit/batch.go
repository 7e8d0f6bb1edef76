package ratelimit

import (
	"context"
	"fmt"
	"time"
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
	calls := make([]scriptCall, len(reqs))
	ptrs := make([]*scriptCall, len(reqs))
	for i, r := range reqs {
		calls[i] = l.batchCall(ctx, keys[i], r.Cost)
		ptrs[i] = &calls[i]
	}

	publish := l.bus.Enabled()
	var start time.Time
	if publish {
		start = time.Now()
	}
	failed := l.runBatch(ctx, ptrs)

	results := make([]Result, len(reqs))
	var first *BackendError
	for i := range calls {
		var (
			res Result
			err *BackendError
		)
		switch {
		case failed != nil:
			err = failed
		case calls[i].err != nil:
			err = newBackendError(calls[i].err)
		default:
			res, err = l.decode(calls[i].reply)
		}
		if err != nil {
			res = l.failResult(ctx)
			if first == nil {
				first = err
			}
		} else {
			res = l.shadow(res)
		}
		results[i] = res
		if publish {
			l.publish(ctx, l.cfg.algorithm, keys[i], reqs[i].Cost, res, start, err)
		}
	}
	if first != nil {
		return results, first
	}
	return results, nil
}

// runBatch sends calls as one pipeline under the backend timeout. A non-nil
// error means the caller's context ended (or, for a client that ignores
// context deadlines, the timeout passed) before the pipeline returned: then
// calls are not to be read, since the pipeline may still be writing them.
func (l *Limiter) runBatch(ctx context.Context, calls []*scriptCall) *BackendError {
	if ctx.Err() != nil {
		return newBackendError(ctxErr(ctx)) // the caller gave up: Redis is not asked
	}
	b := l.cfg.breaker
	if b == nil {
		return l.runBatchRedis(ctx, calls)
	}
	ok, probe := b.allow(ctx)
	if !ok {
		return circuitOpen()
	}
	start := time.Now()
	err := l.runBatchRedis(ctx, calls)
	// For the breaker the batch is one call: it failed when it timed out
	// or any of its calls found Redis unavailable. The calls keep their own
	// errors.
	verdict := err
	for _, c := range calls {
		if verdict != nil {
			break
		}
		if c.err != nil {
			if be := newBackendError(c.err); breakerOutcome(be, false) == outcomeFailure {
				verdict = be
			}
		}
	}
	l.recordBreaker(ctx, probe, start, verdict)
	return err
}

// runBatchRedis sends calls as one pipeline under the backend timeout.
func (l *Limiter) runBatchRedis(ctx context.Context, calls []*scriptCall) *BackendError {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.timeout)
	defer cancel()
	if l.direct {
		l.pipelined(ctx, calls)
		return nil
	}
	done := make(chan struct{})
	go func() {
		l.pipelined(ctx, calls)
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return newBackendError(ctxErr(ctx))
	}
}

// batchCall builds the script call AllowN(ctx, identity, cost) makes for
// key: the same script, keys and arguments as eval in spending mode.
// TestBatchAllow holds the two to the same results.
func (l *Limiter) batchCall(ctx context.Context, key string, cost int64) scriptCall {
	args := [...]any{l.argA, l.argB, l.argC, cost, modeSpend, l.nowArg()}
	return scriptCall{script: l.script, cmd: newScriptCmd(ctx, l.script, l.scriptKeys(key), args[:])}
}
