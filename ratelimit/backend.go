package ratelimit

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// exec runs script on Redis with the limiter's backend timeout and returns
// its all-integer reply. It is the one place a decision touches the
// network. With pipelining on (WithPipelining) the call goes through the
// limiter's dispatcher, which shares round trips between concurrent calls
// (pipeline.go); otherwise it is one EVALSHA of its own.
//
// Either way the semantics are the same: the reply or a classified
// *BackendError, within the backend timeout (WithTimeout) or the caller's
// earlier deadline; EVALSHA falls back to EVAL on NOSCRIPT (the script cache
// is lost on restart, failover and SCRIPT FLUSH). What the caller decides on
// an error (the fail strategy) is up to the caller.
//
// exec retains neither keys nor args.
//
// With a circuit breaker (WithBreaker), the call goes to Redis only when
// the breaker lets it; otherwise it fails at once with ErrorCircuitOpen.
func (l *Limiter) exec(ctx context.Context, script *redis.Script, keys []string, args ...any) ([]int64, *BackendError) {
	if ctx.Err() != nil {
		// The caller has given up already: Redis is not asked (and the
		// breaker learns nothing from it).
		return nil, newBackendError(ctxErr(ctx))
	}
	if l.cfg.breaker == nil {
		return l.execRedis(ctx, script, keys, args)
	}
	var reply []int64
	err := l.guarded(ctx, func() *BackendError {
		var err *BackendError
		reply, err = l.execRedis(ctx, script, keys, args)
		return err
	})
	return reply, err
}

// execRedis sends one script call, pipelined or on its own.
func (l *Limiter) execRedis(ctx context.Context, script *redis.Script, keys []string, args []any) ([]int64, *BackendError) {
	if l.pipe != nil {
		return l.pipe.do(ctx, script, keys, args)
	}
	return l.execOne(ctx, script, keys, args)
}

// execOne runs one script call in a round trip of its own.
func (l *Limiter) execOne(ctx context.Context, script *redis.Script, keys []string, args []any) ([]int64, *BackendError) {
	return l.runOne(ctx, script, newScriptCmd(ctx, script, keys, args))
}

// runOne runs a prepared command in a round trip of its own, under the
// backend timeout: on the caller's goroutine when the client honours
// context deadlines, else on one of its own so that the caller still leaves
// on time.
func (l *Limiter) runOne(ctx context.Context, script *redis.Script, cmd *redis.IntSliceCmd) ([]int64, *BackendError) {
	// A caller's deadline within the backend timeout already bounds the
	// call; only a later one (or none) needs a context of its own, which
	// costs five allocations.
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > l.cfg.timeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.cfg.timeout)
		defer cancel()
	}
	var (
		reply []int64
		err   error
	)
	if l.direct {
		reply, err = l.runCmd(ctx, script, cmd)
	} else {
		reply, err = l.runGuarded(ctx, script, cmd)
	}
	if err != nil {
		return nil, newBackendError(err)
	}
	return reply, nil
}

// runCmd sends cmd (an EVALSHA) and, on NOSCRIPT, the same call as EVAL,
// which also puts the script back in the cache.
func (l *Limiter) runCmd(ctx context.Context, script *redis.Script, cmd *redis.IntSliceCmd) ([]int64, error) {
	_ = l.client.Process(ctx, cmd)
	reply, err := cmd.Result()
	if err != nil && isNoScript(err) {
		return evalFallback(ctx, l.client, script, cmd)
	}
	return reply, err
}

type runReply struct {
	reply []int64
	err   error
}

func (l *Limiter) runGuarded(ctx context.Context, script *redis.Script, cmd *redis.IntSliceCmd) ([]int64, error) {
	done := make(chan runReply, 1)
	go func() {
		reply, err := l.runCmd(ctx, script, cmd)
		done <- runReply{reply, err}
	}()
	select {
	case r := <-done:
		return r.reply, r.err
	case <-ctx.Done():
		return nil, ctxErr(ctx)
	}
}

// newScriptCmd builds EVALSHA sha numkeys keys... args... as a typed
// command, so that the all-integer reply is read straight into an []int64
// (a plain *redis.Cmd would box every integer and copy them again). The
// script's hash and the key count are boxed without allocating; keys and args
// are copied, not retained.
func newScriptCmd(ctx context.Context, script *redis.Script, keys []string, args []any) *redis.IntSliceCmd {
	a := make([]any, 3+len(keys)+len(args))
	a[0] = "evalsha"
	a[1] = boxedHash(script)
	a[2] = len(keys)
	for i, k := range keys {
		a[3+i] = k
	}
	copy(a[3+len(keys):], args)
	return redis.NewIntSliceCmd(ctx, a...)
}

// splitScriptCmd returns the keys and args of a command built by
// newScriptCmd.
func splitScriptCmd(cmd *redis.IntSliceCmd) (keys []string, args []any) {
	a := cmd.Args()
	n := a[2].(int)
	keys = make([]string, n)
	for i := range keys {
		keys[i] = a[3+i].(string)
	}
	return keys, a[3+n:]
}

// evalFallback runs the call of cmd as EVAL, with the script's source. It is
// the slow path after NOSCRIPT: it costs the script's bytes on the wire and
// reloads the script on the node that ran it.
func evalFallback(ctx context.Context, c redis.Scripter, script *redis.Script, cmd *redis.IntSliceCmd) ([]int64, error) {
	keys, args := splitScriptCmd(cmd)
	return script.Eval(ctx, c, keys, args...).Int64Slice()
}

func isNoScript(err error) bool { return redis.HasErrorPrefix(err, "NOSCRIPT") }

// hashes holds each script's SHA-1 as an interface value, boxed once:
// boxing the string on every call would allocate.
var hashes sync.Map // *redis.Script -> any(string)

func boxedHash(s *redis.Script) any {
	if h, ok := hashes.Load(s); ok {
		return h
	}
	h, _ := hashes.LoadOrStore(s, any(s.Hash()))
	return h
}
