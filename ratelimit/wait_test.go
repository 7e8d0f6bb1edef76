package ratelimit

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWait runs Wait on a real redis-server: after a denial it sleeps the
// RetryAfter Redis gave and is then allowed (Redis TIME has moved on by at
// least that much); a deadline that comes too soon gives
// ErrWouldExceedDeadline without waiting it out; a context canceled while
// it waits ends it with the context's error. Every attempt is published.
func TestWait(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	redisNow := func() time.Time {
		t.Helper()
		now, err := c.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return now
	}

	t.Run("waits the RetryAfter", func(t *testing.T) {
		var mu sync.Mutex
		var blocks []Event
		hooks := Hooks{OnBlock: func(_ context.Context, e Event) {
			mu.Lock()
			blocks = append(blocks, e)
			mu.Unlock()
		}}
		l := mustNew(t, c, PerSecond(10).WithBurst(1), WithNamespace("wait"), WithSubscribers(hooks))
		if res, err := l.Allow(ctx, "u"); err != nil || !res.Allowed {
			t.Fatalf("first call: %+v %v", res, err)
		}
		t0 := redisNow()
		res, err := l.Wait(ctx, "u", 1)
		t1 := redisNow()
		if err != nil || !res.Allowed || res.Reason != ReasonQuota {
			t.Fatalf("Wait: %+v %v", res, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(blocks) == 0 {
			t.Fatal("Wait was allowed without a denial first: the test did not wait")
		}
		if waited, need := t1.Sub(t0), blocks[0].Result.RetryAfter; waited < need {
			t.Errorf("allowed after %v of Redis time, but the denial said retry after %v", waited, need)
		}
	})

	t.Run("deadline too near", func(t *testing.T) {
		l := mustNew(t, c, PerMinute(1).WithBurst(1), WithNamespace("wait-deadline"))
		if res, err := l.Allow(ctx, "u"); err != nil || !res.Allowed {
			t.Fatalf("first call: %+v %v", res, err)
		}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second) // the bucket refills in a minute
		defer cancel()
		res, err := l.Wait(dctx, "u", 1)
		if !errors.Is(err, ErrWouldExceedDeadline) || res.Allowed || res.RetryAfter < 5*time.Second {
			t.Fatalf("Wait with a deadline before the refill: %+v %v", res, err)
		}
		if dctx.Err() != nil {
			t.Errorf("Wait waited the deadline out instead of returning at once")
		}
	})

	t.Run("canceled while waiting", func(t *testing.T) {
		blocked := make(chan struct{}, 1)
		hooks := Hooks{OnBlock: func(context.Context, Event) {
			select {
			case blocked <- struct{}{}:
			default:
			}
		}}
		l := mustNew(t, c, PerMinute(1).WithBurst(1), WithNamespace("wait-cancel"), WithSubscribers(hooks))
		if res, err := l.Allow(ctx, "u"); err != nil || !res.Allowed {
			t.Fatalf("first call: %+v %v", res, err)
		}
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := l.Wait(cctx, "u", 1)
			done <- err
		}()
		<-blocked // Wait was denied and now sleeps toward the refill
		cancel()
		err := <-done
		if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "ratelimit:") {
			t.Fatalf("Wait canceled: %v, want a ratelimit: error wrapping context.Canceled", err)
		}
	})
}

// TestContextCause: a call whose context was canceled with a cause is a
// BackendError of Type canceled, pipelined or not, and keeps the cause.
func TestContextCause(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	why := errors.New("client went away")
	for _, pipelining := range []bool{true, false} {
		l := mustNew(t, c, PerSecond(10), WithPipelining(pipelining))
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(why)
		_, err := l.Allow(ctx, "u")
		var be *BackendError
		if !errors.As(err, &be) || be.Type != ErrorCanceled || !errors.Is(err, context.Canceled) {
			t.Errorf("pipelining %v: %v (%T), want a BackendError of type canceled", pipelining, err, err)
		}
		if pipelining && !errors.Is(err, why) {
			t.Errorf("pipelined: %v lost the cause", err)
		}
	}
}
