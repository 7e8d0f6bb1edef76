package ratelimit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// replyDropper is a TCP proxy to Redis that, while armed, closes the
// connection instead of passing on the reply to a script call (EVALSHA,
// EVAL, or FCALL of the functions library): Redis ran
// the script, and the client never hears of it, as when a connection breaks
// (a failover, a network cut, CLIENT KILL) between the two.
type replyDropper struct {
	ln      net.Listener
	target  string
	armed   atomic.Int32 // replies still to drop
	dropped atomic.Int32
	wg      sync.WaitGroup
}

func newReplyDropper(t *testing.T, target string) *replyDropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &replyDropper{ln: ln, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *replyDropper) addr() string { return p.ln.Addr().String() }

func (p *replyDropper) handle(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	var script atomic.Bool // the client sent a script call not yet answered
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				if lower := bytes.ToLower(buf[:n]); bytes.Contains(lower, []byte("evalsha")) || bytes.Contains(lower, []byte("\r\neval\r\n")) || bytes.Contains(lower, []byte("\r\nfcall\r\n")) {
					script.Store(true)
				}
				if _, werr := server.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		server.Close()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			if script.Swap(false) {
				if left := p.armed.Load(); left > 0 && p.armed.CompareAndSwap(left, left-1) {
					p.dropped.Add(1)
					break
				}
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	client.Close()
	server.Close()
	_, _ = io.Copy(io.Discard, server)
}

// TestReplyLost breaks the connection after Redis ran a decision's script
// and before its reply reached the client. With go-redis retries on (the
// default), the client sends the call again on a new connection: a second
// spend for the token bucket (one call costs twice: the error is on the
// safe side, never an over-admission); for a lease, the retried acquire of
// the same lease id must grant the lease already held, not fail nor take a
// second one. With retries off the call fails with a connection error and
// the fail strategy decides; Redis did spend, which the caller cannot know.
func TestReplyLost(t *testing.T) {
	srv := redistestStart(t)
	admin := srv.Client(t)
	ctx := context.Background()
	p := newReplyDropper(t, srv.Addr)
	client := func(retries int) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: p.addr(), ContextTimeoutEnabled: true, MaxRetries: retries, Protocol: 2})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	retrying, single := client(3), client(-1)
	opts := []Option{WithTimeout(5 * time.Second), WithPipelining(false), WithFailStrategy(FailClosed)}

	t.Run("token bucket, retried", func(t *testing.T) {
		l := mustNew(t, retrying, PerMinute(10), append(opts, WithNamespace("retried"))...)
		if _, err := l.Allow(ctx, "warm"); err != nil { // the script in the cache
			t.Fatal(err)
		}
		p.dropped.Store(0)
		p.armed.Store(1)
		res, err := l.Allow(ctx, "u")
		if p.dropped.Load() != 1 {
			t.Fatal("no reply was dropped")
		}
		if err != nil || !res.Allowed {
			t.Fatalf("retried call: %+v %v", res, err)
		}
		t.Logf("one Allow after a lost reply: remaining %d of 10", res.Remaining)
		if res.Remaining != 8 {
			t.Fatalf("remaining %d: want 8, the call spent twice (go-redis sent it again)", res.Remaining)
		}
	})
	t.Run("token bucket, not retried", func(t *testing.T) {
		l := mustNew(t, single, PerMinute(10), append(opts, WithNamespace("single"))...)
		if _, err := l.Allow(ctx, "warm"); err != nil {
			t.Fatal(err)
		}
		p.dropped.Store(0)
		p.armed.Store(1)
		res, err := l.Allow(ctx, "u")
		if p.dropped.Load() != 1 {
			t.Fatal("no reply was dropped")
		}
		var be *BackendError
		if !errors.As(err, &be) || be.Type != ErrorConnection || res.Allowed || res.Reason != ReasonFailClosed {
			t.Fatalf("lost reply without retries: %+v %v", res, err)
		}
		peek, err := mustNew(t, admin, PerMinute(10), WithNamespace("single")).Peek(ctx, "u")
		if err != nil || peek.Remaining != 9 {
			t.Fatalf("Redis state after the lost reply: %+v %v, want the call spent", peek, err)
		}
	})
	t.Run("lease, retried", func(t *testing.T) {
		c := mustNewConcurrency(t, retrying, 2, append(opts, WithNamespace("lease"))...)
		if _, err := c.Peek(ctx, "warm"); err != nil {
			t.Fatal(err)
		}
		p.dropped.Store(0)
		p.armed.Store(1)
		lease, res, err := c.Acquire(ctx, "u", 1)
		if p.dropped.Load() != 1 {
			t.Fatal("no reply was dropped")
		}
		if err != nil || lease == nil || !lease.Tracked() || res.Remaining != 1 {
			t.Fatalf("retried acquire: %v %+v %v, want the lease, one unit left", lease, res, err)
		}
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if peek, err := c.Peek(ctx, "u"); err != nil || peek.Remaining != 2 {
			t.Fatalf("after the release: %+v %v, want all capacity back", peek, err)
		}
	})
}

// TestAcquireResent: concurrency.lua answers an acquire of a lease id
// already held as granted, without taking its weight twice (the call sent
// again after a lost reply), on both backends.
func TestAcquireResent(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			keys := []string{"r:{x}", "r:{x}:meta"}
			acquire := func(id string, weight int64) []int64 {
				t.Helper()
				reply, err := concurrencyScript.Run(ctx, b.client, keys, 4, 10_000_000, id, weight, int64(opAcquire), 0).Int64Slice()
				if err != nil {
					t.Fatalf("acquire %s: %v", id, err)
				}
				return reply
			}
			if r := acquire("ab", 2); r[0] != 1 || r[1] != 2 {
				t.Fatalf("first acquire: %v", r)
			}
			if r := acquire("ab", 2); r[0] != 1 || r[1] != 2 {
				t.Fatalf("the same acquire again: %v, want granted with 2 units still free", r)
			}
			if r := acquire("cd", 2); r[0] != 1 || r[1] != 0 {
				t.Fatalf("another lease: %v, want granted with nothing left", r)
			}
			if r := acquire("ef", 1); r[0] != 0 {
				t.Fatalf("over capacity: %v, want denied", r)
			}
		})
	}
}
