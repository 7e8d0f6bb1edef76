package ratelimit

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
)

// useAutoPipeline makes l send its calls through go-redis's experimental
// AutoPipeline (v9.23) instead of its own dispatcher, with the same typed
// command, timeout and NOSCRIPT fallback. It exists to compare the two in
// BenchmarkAllowConcurrent; the library does not use it (see pipeline.go).
func useAutoPipeline(tb testing.TB, l *Limiter) {
	tb.Helper()
	ap, err := l.client.AutoPipeline()
	if err != nil {
		tb.Fatalf("AutoPipeline: %v", err)
	}
	if l.pipe == nil {
		l.pipe = newDispatcher(l)
	}
	l.pipe.alt = func(ctx context.Context, script *redis.Script, cmd *redis.IntSliceCmd) ([]int64, *BackendError) {
		ctx, cancel := context.WithTimeout(ctx, l.cfg.timeout)
		defer cancel()
		_ = ap.Process(ctx, cmd)
		reply, err := cmd.Result()
		if err != nil && isNoScript(err) {
			reply, err = evalFallback(ctx, ap, script, cmd)
		}
		if err != nil {
			return nil, newBackendError(err)
		}
		return reply, nil
	}
}
