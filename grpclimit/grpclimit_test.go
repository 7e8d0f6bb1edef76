package grpclimit_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/distributed-rate-limiter/ratelimit-go/grpclimit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

var checkReq = &grpc_health_v1.HealthCheckRequest{}

// TestAllowedThenDenied: two unary calls pass with the draft-11 metadata
// and the Decision in the handler's context; the third gets
// ResourceExhausted with RetryInfo and a QuotaFailure naming the policy,
// and its handler does not run.
func TestAllowedThenDenied(t *testing.T) {
	both(t, func(t *testing.T, rdb *redis.Client, mr *miniredis.Miniredis) {
		rl := grpclimit.Must(newLimiter(t, rdb, ratelimit.PerHour(2)))
		cl, h := serve(t, rl)
		for i, wantR := range []int64{1, 0} {
			var hdr, trl metadata.MD
			if _, err := cl.Check(ctx(t), checkReq, grpc.Header(&hdr), grpc.Trailer(&trl)); err != nil {
				t.Fatalf("call %d: %v", i+1, err)
			}
			f, ok := parseFields(t, hdr)
			if !ok {
				t.Fatalf("call %d: no ratelimit metadata in %v", i+1, hdr)
			}
			// An allowed call's t is when the bucket is full again: 1800 s
			// per token spent.
			if f.policy != "api" || f.q != 2 || f.w != 3600 || f.r != wantR || !near(f.t, 1800*(2-wantR), slack(mr)) || f.retryAfter != -1 {
				t.Errorf("call %d: metadata %+v, want api q=2 w=3600 r=%d t≈%d and no retry-after", i+1, f, wantR, 1800*(2-wantR))
			}
			if got, want := trl.Get("decision"), "api cost=1 remaining="+strconv.FormatInt(wantR, 10)+" reason=quota"; len(got) != 1 || got[0] != want {
				t.Errorf("call %d: the handler saw %q, want %q", i+1, got, want)
			}
		}

		var hdr metadata.MD
		_, err := cl.Check(ctx(t), checkReq, grpc.Header(&hdr))
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted {
			t.Fatalf("third call: %v, want ResourceExhausted", err)
		}
		if n := h.calls.Load(); n != 2 {
			t.Errorf("the handler ran %d times, want 2 (not for the denied call)", n)
		}
		retry, quota := details(t, st)
		if retry == nil || !near(int64(retry.GetRetryDelay().AsDuration()/time.Second), 1800, slack(mr)) {
			t.Errorf("RetryInfo %v, want a delay of about 1800 s", retry)
		}
		if quota == nil || len(quota.GetViolations()) != 1 || quota.GetViolations()[0].GetQuotaId() != "api" || quota.GetViolations()[0].GetQuotaValue() != 2 {
			t.Errorf("QuotaFailure %v, want one violation of quota api, value 2", quota)
		}
		f, ok := parseFields(t, hdr)
		if !ok || f.r != 0 || !near(f.t, 1800, slack(mr)) || f.retryAfter != f.t {
			t.Errorf("denied metadata %+v (present %v), want r=0, t≈1800 and retry-after equal to t", f, ok)
		}
	})
}

// details returns the RetryInfo and QuotaFailure of a status.
func details(t *testing.T, st *status.Status) (*errdetails.RetryInfo, *errdetails.QuotaFailure) {
	t.Helper()
	var retry *errdetails.RetryInfo
	var quota *errdetails.QuotaFailure
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.RetryInfo:
			retry = d
		case *errdetails.QuotaFailure:
			quota = d
		case error:
			t.Fatalf("undecodable detail: %v", d)
		}
	}
	return retry, quota
}

// TestStream: a server stream is decided when it opens, carries the
// metadata and the Decision, and the stream over the limit fails on its
// first Recv with ResourceExhausted, its handler not run.
func TestStream(t *testing.T) {
	both(t, func(t *testing.T, rdb *redis.Client, mr *miniredis.Miniredis) {
		rl := grpclimit.Must(newLimiter(t, rdb, ratelimit.PerHour(1)))
		cl, h := serve(t, rl)

		s, err := cl.Watch(ctx(t), checkReq)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatalf("first stream: %v", err)
		}
		hdr, err := s.Header()
		if err != nil {
			t.Fatal(err)
		}
		if f, ok := parseFields(t, hdr); !ok || f.q != 1 || f.r != 0 {
			t.Errorf("first stream's metadata %+v (present %v), want q=1 r=0", f, ok)
		}
		for { // drain to the trailer
			if _, err := s.Recv(); err != nil {
				break
			}
		}
		if got := s.Trailer().Get("decision"); len(got) != 1 || got[0] != "api cost=1 remaining=0 reason=quota" {
			t.Errorf("the stream handler saw %q", got)
		}

		s, err = cl.Watch(ctx(t), checkReq)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted {
			t.Fatalf("second stream: %v, want ResourceExhausted", err)
		}
		if retry, _ := details(t, st); retry == nil || !near(int64(retry.GetRetryDelay().AsDuration()/time.Second), 3600, slack(mr)) {
			t.Errorf("RetryInfo %v, want about 3600 s", retry)
		}
		if n := h.calls.Load(); n != 1 {
			t.Errorf("the stream handler ran %d times, want 1", n)
		}
	})
}

// TestMetadataIdentity: with KeyByMetadata, each API key has its own
// quota, and a call without one is InvalidArgument before the limiter is
// asked.
func TestMetadataIdentity(t *testing.T) {
	both(t, func(t *testing.T, rdb *redis.Client, mr *miniredis.Miniredis) {
		lim := newLimiter(t, rdb, ratelimit.PerHour(1))
		var asked atomic.Int64
		counted := grpclimit.LimiterFunc(func(ctx context.Context, id string, cost int64) (ratelimit.Result, error) {
			asked.Add(1)
			return lim.AllowN(ctx, id, cost)
		})
		rl := grpclimit.Must(counted, grpclimit.WithPolicyName("keys"), grpclimit.WithKey(grpclimit.KeyByMetadata("X-API-Key")))
		cl, _ := serve(t, rl)
		call := func(key string) codes.Code {
			c := ctx(t)
			if key != "" {
				c = metadata.AppendToOutgoingContext(c, "x-api-key", key)
			}
			_, err := cl.Check(c, checkReq)
			return status.Code(err)
		}
		for i, step := range []struct {
			key  string
			want codes.Code
		}{
			{"team-a", codes.OK},
			{"team-a", codes.ResourceExhausted},
			{"team-b", codes.OK}, // a quota of its own
			{"", codes.InvalidArgument},
		} {
			if got := call(step.key); got != step.want {
				t.Errorf("step %d (key %q): %v, want %v", i, step.key, got, step.want)
			}
		}
		if n := asked.Load(); n != 3 {
			t.Errorf("the limiter was asked %d times, want 3 (not without a key)", n)
		}
		// The identity is the one httplimit.KeyByHeader("X-API-Key") gives.
		key, _ := lim.Key("x-api-key:team-a")
		if n, err := rdb.Exists(ctx(t), key).Result(); err != nil || n != 1 {
			t.Errorf("no state under the key of x-api-key:team-a (%d, %v)", n, err)
		}
	})
}

// TestPeerIdentity: the default identity is the peer's address, host
// only: the state lives under the key of "ip:127.0.0.1/32".
func TestPeerIdentity(t *testing.T) {
	both(t, func(t *testing.T, rdb *redis.Client, mr *miniredis.Miniredis) {
		lim := newLimiter(t, rdb, ratelimit.PerHour(5))
		cl, _ := serve(t, grpclimit.Must(lim))
		if _, err := cl.Check(ctx(t), checkReq); err != nil {
			t.Fatal(err)
		}
		key, _ := lim.Key("ip:127.0.0.1/32")
		if n, err := rdb.Exists(ctx(t), key).Result(); err != nil || n != 1 {
			t.Errorf("no state under the key of ip:127.0.0.1/32 (%d, %v)", n, err)
		}
	})
}

// TestKeyByPeer covers the address forms a peer can have.
func TestKeyByPeer(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want string // "" for ErrNoIdentity
	}{
		{&net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 5000}, "ip:203.0.113.9/32"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:203.0.113.9"), Port: 5000}, "ip:203.0.113.9/32"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:aa:bb:1:2:3:4"), Port: 443, Zone: "eth0"}, "ip:2001:db8:aa:bb::/64"},
		{strAddr{"tcp", "[2001:db8:aa:bb::9]:443"}, "ip:2001:db8:aa:bb::/64"},
		{strAddr{"tcp", "198.51.100.4:1"}, "ip:198.51.100.4/32"},
		{&net.UnixAddr{Name: "/run/app.sock", Net: "unix"}, ""},
		{strAddr{"pipe", "conn-7"}, ""},
		{nil, ""},
	} {
		c0 := context.Background()
		if c.addr != nil {
			c0 = peer.NewContext(c0, &peer.Peer{Addr: c.addr})
		}
		got, err := grpclimit.KeyByPeer(c0)
		if c.want == "" {
			if !errors.Is(err, grpclimit.ErrNoIdentity) {
				t.Errorf("%v: %q, %v; want ErrNoIdentity", c.addr, got, err)
			}
			if c.addr != nil && strings.Contains(err.Error(), c.addr.String()) {
				t.Errorf("%v: the error repeats the address: %v", c.addr, err)
			}
			continue
		}
		if got != c.want || err != nil {
			t.Errorf("%v: %q, %v; want %q", c.addr, got, err, c.want)
		}
	}
}

type strAddr struct{ network, s string }

func (a strAddr) Network() string { return a.network }
func (a strAddr) String() string  { return a.s }

// TestBadInput: calls that cannot be decided never reach the limiter nor
// the handler: no identity, a failing cost function and a cost above the
// burst are InvalidArgument; a KeyFunc's own status is passed on.
func TestBadInput(t *testing.T) {
	mr := miniredis.RunT(t)
	lim := newLimiter(t, client(t, mr.Addr()), ratelimit.PerHour(5))
	costFromService := grpclimit.WithCost(func(_ context.Context, _ string, req any) (int64, error) {
		r, _ := req.(*grpc_health_v1.HealthCheckRequest)
		return strconv.ParseInt(r.GetService(), 10, 64) // the test's way to send a cost
	})
	for _, c := range []struct {
		name string
		opts []grpclimit.Option
		svc  string
		want codes.Code
	}{
		{"no identity", []grpclimit.Option{grpclimit.WithKey(grpclimit.KeyByMetadata("x-api-key"))}, "", codes.InvalidArgument},
		{"no key function", []grpclimit.Option{grpclimit.WithKey(grpclimit.FirstOf())}, "", codes.InvalidArgument},
		{"cost function fails", []grpclimit.Option{costFromService}, "many", codes.InvalidArgument},
		{"cost above the burst", []grpclimit.Option{costFromService}, "6", codes.InvalidArgument},
		{"negative cost", []grpclimit.Option{costFromService}, "-1", codes.InvalidArgument},
		{"own status", []grpclimit.Option{grpclimit.WithKey(func(context.Context) (string, error) {
			return "", status.Error(codes.Unauthenticated, "who are you")
		})}, "", codes.Unauthenticated},
		{"cost within the burst", []grpclimit.Option{costFromService}, "5", codes.OK}, // the control
	} {
		t.Run(c.name, func(t *testing.T) {
			var asked atomic.Int64
			counted := grpclimit.LimiterFunc(func(ctx context.Context, id string, cost int64) (ratelimit.Result, error) {
				asked.Add(1)
				return lim.AllowN(ctx, id, cost)
			})
			cl, h := serve(t, grpclimit.Must(counted, c.opts...))
			_, err := cl.Check(ctx(t), &grpc_health_v1.HealthCheckRequest{Service: c.svc})
			if got := status.Code(err); got != c.want {
				t.Fatalf("%v, want %v", err, c.want)
			}
			if c.want == codes.OK {
				if h.calls.Load() != 1 {
					t.Error("the handler did not run")
				}
				return
			}
			if n := h.calls.Load(); n != 0 {
				t.Errorf("the handler ran %d times", n)
			}
			// The limiter rejects a cost above the burst itself, unspent.
			if want := int64(map[bool]int{true: 1}[c.name == "cost above the burst" || c.name == "negative cost"]); asked.Load() != want {
				t.Errorf("the limiter was asked %d times, want %d", asked.Load(), want)
			}
		})
	}
}

// TestFailStrategies: with Redis failing, FailClosed answers Unavailable
// with a RetryInfo and runs no handler; FailOpen runs the handler with a
// ReasonFailOpen Decision and sends no ratelimit metadata.
func TestFailStrategies(t *testing.T) {
	for _, c := range []struct {
		fail     ratelimit.FailStrategy
		want     codes.Code
		decision string
	}{
		{ratelimit.FailClosed, codes.Unavailable, ""},
		{ratelimit.FailOpen, codes.OK, "api cost=1 remaining=0 reason=fail_open"},
	} {
		t.Run(c.fail.String(), func(t *testing.T) {
			mr := miniredis.RunT(t)
			mr.SetError("LOADING Redis is loading the dataset in memory") // every command fails
			lim := newLimiter(t, client(t, mr.Addr()), ratelimit.PerHour(5), ratelimit.WithFailStrategy(c.fail))
			cl, h := serve(t, grpclimit.Must(lim, grpclimit.WithUnavailableRetryAfter(3*time.Second)))
			var hdr, trl metadata.MD
			_, err := cl.Check(ctx(t), checkReq, grpc.Header(&hdr), grpc.Trailer(&trl))
			st := status.Convert(err)
			if st.Code() != c.want {
				t.Fatalf("%v, want %v", err, c.want)
			}
			if _, ok := parseFields(t, hdr); ok {
				t.Errorf("ratelimit metadata without a quota decision: %v", hdr)
			}
			if c.want == codes.Unavailable {
				retry, quota := details(t, st)
				if retry.GetRetryDelay().AsDuration() != 3*time.Second || quota != nil {
					t.Errorf("details: RetryInfo %v, QuotaFailure %v; want 3 s and none", retry, quota)
				}
				if ra := hdr.Get(grpclimit.MDRetryAfter); len(ra) != 1 || ra[0] != "3" {
					t.Errorf("retry-after %q, want 3", ra)
				}
				if n := h.calls.Load(); n != 0 {
					t.Errorf("the handler ran %d times", n)
				}
				return
			}
			if got := trl.Get("decision"); len(got) != 1 || got[0] != c.decision {
				t.Errorf("the handler saw %q, want %q", got, c.decision)
			}
		})
	}
}

// TestCanceled: a caller that is gone before the limiter answers gets
// Canceled (its client canceled) or DeadlineExceeded, not ResourceExhausted
// nor Unavailable, and the handler does not run, whatever the fail
// strategy. The limiter decides only once the server's context has ended:
// no timing involved.
func TestCanceled(t *testing.T) {
	for _, fail := range []ratelimit.FailStrategy{ratelimit.FailOpen, ratelimit.FailClosed} {
		for _, end := range []string{"client-cancel", "deadline"} {
			t.Run(fail.String()+"/"+end, func(t *testing.T) {
				mr := miniredis.RunT(t)
				lim := newLimiter(t, client(t, mr.Addr()), ratelimit.PerHour(5), ratelimit.WithFailStrategy(fail))
				callCtx, cancel := context.WithCancel(ctx(t))
				defer cancel()
				late := grpclimit.LimiterFunc(func(c context.Context, id string, cost int64) (ratelimit.Result, error) {
					if end == "client-cancel" {
						cancel() // the client gives up while the limiter is asked
					}
					select {
					case <-c.Done():
					case <-time.After(20 * time.Second):
						t.Error("the server's context did not end")
					}
					return lim.AllowN(c, id, cost)
				})
				got := make(chan error, 1)
				record := func(c context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
					if end == "deadline" {
						// A deadline already past: the client's own would
						// race its RST_STREAM (Canceled) against the
						// server's timer (DeadlineExceeded).
						var cancel context.CancelFunc
						c, cancel = context.WithDeadline(c, time.Now())
						defer cancel()
					}
					resp, err := next(c, req)
					got <- err
					return resp, err
				}
				cl, h := serve(t, grpclimit.Must(late), record)
				_, err := cl.Check(callCtx, checkReq)
				want := codes.Canceled
				if end == "deadline" {
					want = codes.DeadlineExceeded
				}
				if status.Code(err) != want {
					t.Errorf("the client got %v, want %v", err, want)
				}
				select {
				case err := <-got:
					if status.Code(err) != want {
						t.Errorf("the interceptor returned %v, want %v", err, want)
					}
				case <-time.After(20 * time.Second):
					t.Fatal("the interceptor never returned")
				}
				if n := h.calls.Load(); n != 0 {
					t.Errorf("the handler ran %d times for a caller that was gone", n)
				}
			})
		}
	}
}

// TestReasonCanceled: a Limiter that reports ReasonCanceled while the
// call's own context is still live (it used a context of its own) gets
// Canceled too, without ratelimit metadata, and the handler does not run.
func TestReasonCanceled(t *testing.T) {
	lim := grpclimit.LimiterFunc(func(context.Context, string, int64) (ratelimit.Result, error) {
		return ratelimit.Result{Reason: ratelimit.ReasonCanceled, Limit: ratelimit.PerHour(5)},
			&ratelimit.BackendError{Type: ratelimit.ErrorCanceled, Err: context.Canceled}
	})
	cl, h := serve(t, grpclimit.Must(lim))
	var hdr metadata.MD
	_, err := cl.Check(ctx(t), checkReq, grpc.Header(&hdr))
	if status.Code(err) != codes.Canceled {
		t.Errorf("%v, want Canceled", err)
	}
	if _, ok := parseFields(t, hdr); ok {
		t.Errorf("ratelimit metadata on a call Redis did not decide: %v", hdr)
	}
	if n := h.calls.Load(); n != 0 {
		t.Errorf("the handler ran %d times", n)
	}
}

// TestExempt: exempt methods and services pass without a decision or
// metadata, while the others are limited.
func TestExempt(t *testing.T) {
	for _, c := range []struct {
		exempt     string
		checkCodes []codes.Code // of three Check calls; Check is limited to one an hour
	}{
		{"/grpc.health.v1.Health/List", []codes.Code{codes.OK, codes.ResourceExhausted, codes.ResourceExhausted}},
		{"/grpc.health.v1.Health/", []codes.Code{codes.OK, codes.OK, codes.OK}},
	} {
		t.Run(c.exempt, func(t *testing.T) {
			mr := miniredis.RunT(t)
			lim := newLimiter(t, client(t, mr.Addr()), ratelimit.PerHour(1))
			cl, _ := serve(t, grpclimit.Must(lim, grpclimit.WithExempt(c.exempt)))
			for i := range 3 {
				var hdr, trl metadata.MD
				if _, err := cl.List(ctx(t), &grpc_health_v1.HealthListRequest{}, grpc.Header(&hdr), grpc.Trailer(&trl)); err != nil {
					t.Fatalf("exempt call %d: %v", i, err)
				}
				if _, ok := parseFields(t, hdr); ok || trl.Get("decision")[0] != "none" {
					t.Errorf("exempt call %d was decided: %v %v", i, hdr, trl)
				}
			}
			for i, want := range c.checkCodes {
				if _, err := cl.Check(ctx(t), checkReq); status.Code(err) != want {
					t.Errorf("Check %d: %v, want %v", i, err, want)
				}
			}
		})
	}
}

// TestAdmitPerMessage: a handler charges per message with Admit; the
// headers, sent by the first Admit, are not changed by later ones.
func TestAdmitPerMessage(t *testing.T) {
	mr := miniredis.RunT(t)
	mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	lim := newLimiter(t, client(t, mr.Addr()), ratelimit.PerHour(3))
	rl := grpclimit.Must(lim, grpclimit.WithExempt("/grpc.health.v1.Health/Watch"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainStreamInterceptor(rl.Stream()))
	grpc_health_v1.RegisterHealthServer(srv, perMessage{rl: rl})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	defer func() { srv.Stop(); <-done }()
	cl := dial(t, ln.Addr().String())

	s, err := cl.Watch(ctx(t), checkReq)
	if err != nil {
		t.Fatal(err)
	}
	var sent int
	for {
		if _, err = s.Recv(); err != nil {
			break
		}
		sent++
	}
	if sent != 3 || status.Code(err) != codes.ResourceExhausted {
		t.Errorf("%d messages then %v; want 3 then ResourceExhausted", sent, err)
	}
	hdr, _ := s.Header()
	if f, ok := parseFields(t, hdr); !ok || f.r != 2 {
		t.Errorf("metadata %+v (present %v), want the first message's r=2", f, ok)
	}
}

// perMessage streams until Admit denies, at most 10 messages.
type perMessage struct {
	grpc_health_v1.UnimplementedHealthServer
	rl *grpclimit.Interceptor
}

func (p perMessage) Watch(_ *grpc_health_v1.HealthCheckRequest, ss grpc.ServerStreamingServer[grpc_health_v1.HealthCheckResponse]) error {
	for range 10 {
		if _, err := p.rl.Admit(ss.Context(), 1); err != nil {
			return err
		}
		if err := ss.Send(&grpc_health_v1.HealthCheckResponse{}); err != nil {
			return err
		}
	}
	return nil
}

// TestNew covers construction errors.
func TestNew(t *testing.T) {
	var nilLim *ratelimit.Limiter
	for _, lim := range []grpclimit.Limiter{nil, nilLim, grpclimit.LimiterFunc(nil)} {
		if _, err := grpclimit.New(lim); !errors.Is(err, ratelimit.ErrInvalidOption) {
			t.Errorf("New(%#v): %v, want ErrInvalidOption", lim, err)
		}
	}
	for name, opt := range map[string]grpclimit.Option{
		"nil key":      grpclimit.WithKey(nil),
		"nil cost":     grpclimit.WithCost(nil),
		"bad exempt":   grpclimit.WithExempt("Check"),
		"empty policy": grpclimit.WithPolicyName(""),
		"long policy":  grpclimit.WithPolicyName(strings.Repeat("p", 65)),
		"zero retry":   grpclimit.WithUnavailableRetryAfter(0),
	} {
		if _, err := grpclimit.New(grpclimit.LimiterFunc(allowAll), opt); !errors.Is(err, ratelimit.ErrInvalidOption) {
			t.Errorf("%s: %v, want ErrInvalidOption", name, err)
		}
	}
	if rl := grpclimit.Must(grpclimit.LimiterFunc(allowAll)); rl.Policy() != grpclimit.DefaultPolicy {
		t.Errorf("policy %q, want %q", rl.Policy(), grpclimit.DefaultPolicy)
	}
}

func allowAll(context.Context, string, int64) (ratelimit.Result, error) {
	return ratelimit.Result{Allowed: true}, nil
}

// TestWithoutHeaderMetadata: WithHeaderMetadata(false) sends no
// ratelimit metadata, while a denial still carries its details; the
// policy name of WithPolicyName names the quota.
func TestWithoutHeaderMetadata(t *testing.T) {
	mr := miniredis.RunT(t)
	lim := newLimiter(t, client(t, mr.Addr()), ratelimit.PerHour(1))
	cl, _ := serve(t, grpclimit.Must(lim, grpclimit.WithHeaderMetadata(false), grpclimit.WithPolicyName("calls")))
	for i, want := range []codes.Code{codes.OK, codes.ResourceExhausted} {
		var hdr metadata.MD
		_, err := cl.Check(ctx(t), checkReq, grpc.Header(&hdr))
		st := status.Convert(err)
		if st.Code() != want {
			t.Fatalf("call %d: %v, want %v", i, err, want)
		}
		if _, ok := parseFields(t, hdr); ok || len(hdr.Get(grpclimit.MDRetryAfter)) != 0 {
			t.Errorf("call %d: metadata %v with WithHeaderMetadata(false)", i, hdr)
		}
		if want == codes.ResourceExhausted {
			if retry, quota := details(t, st); retry == nil || quota.GetViolations()[0].GetQuotaId() != "calls" {
				t.Errorf("details %v %v, want RetryInfo and quota calls", retry, quota)
			}
		}
	}
}
