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
// reqs[i].Cost) would have made it, and is published as an Event of its own.
// Each decision is atomic on its own, and decisions on the same identity are
// made in the order of reqs; the batch as a whole is not atomic (use one
// call per identity for all-or-nothing).
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
		calls[i] = l.batchCall(ctx, keys[i:i+1], r.Cost)
		ptrs[i] = &calls[i]
	}

	publish := l.bus.Enabled()
	var start time.Time
	if publish {
		start = time.Now()
	}
	failed := l.runBatch(ctx, ptrs)
	var took time.Duration
	if publish {
		took = time.Since(start)
	}

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
			res, err = l.batchDecode(calls[i].reply)
		}
		if err != nil {
			res = l.failResult()
			if first == nil {
				first = err
			}
		}
		results[i] = res
		if publish {
			ev := Event{
				Namespace:  l.cfg.namespace,
				Algorithm:  l.cfg.algorithm,
				Key:        keys[i],
				Cost:       reqs[i].Cost,
				Result:     res,
				Start:      start,
				Duration:   took,
				ServerAddr: l.server,
			}
			if err != nil { // keep a nil *BackendError out of the interface
				ev.Err = err
			}
			l.bus.Publish(ctx, ev)
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
		return newBackendError(context.Cause(ctx))
	}
}

// batchCall builds the script call AllowN(ctx, identity, cost) makes for
// key: the same script and arguments as eval (spending; Redis TIME, or the
// test clock). TestBatchAllow holds the two to the same results.
func (l *Limiter) batchCall(ctx context.Context, key []string, cost int64) scriptCall {
	nowArg := int64(0)
	if l.cfg.now != nil {
		nowArg = l.cfg.now().UnixMicro()
	}
	args := [...]any{l.argRate, l.argPer, l.argBurst, cost, 1, nowArg}
	return scriptCall{script: l.script, cmd: newScriptCmd(ctx, l.script, key, args[:])}
}

// batchDecode turns a reply of the token-bucket script into a Result, as
// eval does.
func (l *Limiter) batchDecode(reply []int64) (Result, *BackendError) {
	if len(reply) != 5 {
		return Result{}, newBackendError(fmt.Errorf("ratelimit: unexpected script reply of %d integers", len(reply)))
	}
	return Result{
		Allowed:    reply[0] == 1,
		Reason:     ReasonQuota,
		Limit:      l.limit,
		Remaining:  reply[1],
		RetryAfter: durationUS(reply[2]),
		ResetAfter: durationUS(reply[3]),
	}, nil
}
