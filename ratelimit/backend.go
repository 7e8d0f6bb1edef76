package ratelimit

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// exec runs script on Redis with the limiter's backend timeout and returns
// its all-integer reply. It is the one place a decision touches the
// network: on the caller's goroutine when the client honours context
// deadlines, else on one of its own so that the caller still leaves on
// time. Script.Run sends EVALSHA and falls back to EVAL on NOSCRIPT (the
// script cache is lost on restart, failover and SCRIPT FLUSH).
func (l *Limiter) exec(ctx context.Context, script *redis.Script, keys []string, args ...any) ([]int64, *BackendError) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.timeout)
	defer cancel()
	var (
		reply []int64
		err   error
	)
	if l.direct {
		reply, err = script.Run(ctx, l.client, keys, args...).Int64Slice()
	} else {
		reply, err = l.runGuarded(ctx, script, keys, args)
	}
	if err != nil {
		return nil, newBackendError(err)
	}
	return reply, nil
}

type runReply struct {
	reply []int64
	err   error
}

func (l *Limiter) runGuarded(ctx context.Context, script *redis.Script, keys []string, args []any) ([]int64, error) {
	done := make(chan runReply, 1)
	go func() {
		reply, err := script.Run(ctx, l.client, keys, args...).Int64Slice()
		done <- runReply{reply, err}
	}()
	select {
	case r := <-done:
		return r.reply, r.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}
