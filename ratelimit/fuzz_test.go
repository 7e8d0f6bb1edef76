package ratelimit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

// The fuzz targets of the core. .ci/run runs each for a few seconds; the
// seed corpus is in testdata/fuzz/<target>, and a failing input found by
// `go test -fuzz` is written there too. Run one longer with
//
//	go test -run '^$' -fuzz '^FuzzScriptArgs$' -fuzztime 5m ./ratelimit

var validNS = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// FuzzKey checks identity hashing and key building on arbitrary
// namespaces, identities and secrets: a namespace is accepted exactly when
// it is 1 to 64 letters, digits, '_', '-' or '.'; a key is exactly
// <namespace>:<algorithm>:{<hex SHA-256 or HMAC of the identity>}, so it
// holds no byte of the raw identity beyond what the hash gives, its only
// '{' and '}' are the Cluster hash tag, and a MultiLimiter's keys for the
// identity all share that tag (one slot).
func FuzzKey(f *testing.F) {
	f.Add("api", "alice@example.com", []byte(nil), uint8(0))
	f.Add("a:b", "203.0.113.7", []byte("0123456789abcdef"), uint8(2))
	f.Add("ns", "{tag}:x}", []byte("short"), uint8(3))
	f.Add("", "", []byte(nil), uint8(9))
	f.Add(strings.Repeat("n", 65), "\x00\xff", []byte("0123456789abcdef0"), uint8(4))
	f.Fuzz(func(t *testing.T, ns, identity string, secret []byte, algByte uint8) {
		alg := Algorithm(algByte % 5)
		cfg := defaultConfig()
		err := WithNamespace(ns).apply(&cfg)
		if (err == nil) != validNS.MatchString(ns) {
			t.Fatalf("WithNamespace(%q): %v", ns, err)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidOption) || !strings.HasPrefix(err.Error(), "ratelimit:") {
				t.Fatalf("WithNamespace(%q): %v", ns, err)
			}
			ns = "ns"
		}
		if len(secret) < 16 {
			secret = nil
		}
		k := newKeyer(ns+":"+alg.String()+":", secret)
		key, err := k.key(identity)
		tag, terr := k.tag(identity)
		if identity == "" || len(identity) > MaxIdentityLen {
			if !errors.Is(err, ErrInvalidIdentity) || !errors.Is(terr, ErrInvalidIdentity) {
				t.Fatalf("identity of %d bytes: %v, %v", len(identity), err, terr)
			}
			return
		}
		if err != nil || terr != nil {
			t.Fatalf("identity %q: %v, %v", identity, err, terr)
		}
		var sum []byte
		if secret != nil {
			mac := hmac.New(sha256.New, secret)
			mac.Write([]byte(identity))
			sum = mac.Sum(nil)
		} else {
			s := sha256.Sum256([]byte(identity))
			sum = s[:]
		}
		hash := hex.EncodeToString(sum)
		if want := ns + ":" + alg.String() + ":{" + hash + "}"; key != want {
			t.Fatalf("key %q, want %q", key, want)
		}
		if tag != "{"+hash {
			t.Fatalf("tag %q, want {%s", tag, hash)
		}
		if strings.Count(key, "{") != 1 || strings.Count(key, "}") != 1 {
			t.Fatalf("key %q has more than the hash tag's braces", key)
		}
		m := &MultiLimiter{keys: k, quotas: []multiQuota{
			{prefix: ns + ":token_bucket:", suffix: "}:a"}, {prefix: ns + ":fixed_window:", suffix: "}:day"},
		}}
		keys, err := m.Keys(identity)
		if err != nil {
			t.Fatal(err)
		}
		for _, mk := range keys {
			if slotTag(mk) != hash {
				t.Fatalf("multi key %q hashes on %q, not on the identity's tag", mk, slotTag(mk))
			}
		}
	})
}

// slotTag returns what Redis Cluster hashes a key on: the text between the
// first '{' and the next '}', when not empty, else the whole key.
func slotTag(key string) string {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return key
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return key
	}
	return key[i+1 : i+1+j]
}

// FuzzLimit checks Limit validation and its reduction to script units on
// arbitrary rates, periods, bursts and algorithms: Validate never panics
// and rejects with a typed error; an accepted Limit becomes integers below
// 2^53 (at most 16 digits, as the scripts read them) that the scripts'
// own range checks accept, that encode the rate exactly (no rounding), and
// the cost the largest call may ask for; and a Limiter with it decides a
// call of its full burst on a real Redis without a backend error.
func FuzzLimit(f *testing.F) {
	f.Add(int64(10), int64(time.Second), int64(0), uint8(0))
	f.Add(int64(7), int64(3*time.Second+1), int64(1<<40), uint8(0))
	f.Add(int64(1_000_000), int64(24*time.Hour), int64(0), uint8(1))
	f.Add(int64(-1), int64(-1), int64(-1), uint8(2))
	f.Add(int64(1<<53), int64(time.Microsecond), int64(1<<53-1), uint8(3))
	f.Add(int64(9223372036854775807), int64(9223372036854775807), int64(9223372036854775807), uint8(4))
	f.Add(int64(3), int64(71*365*24*time.Hour), int64(3), uint8(5))
	client := redistest.Start(f).Client(f)
	f.Fuzz(func(t *testing.T, rate, per, burst int64, algByte uint8) {
		alg := Algorithm(algByte % 6) // 5 is unknown
		l := Limit{Rate: rate, Per: time.Duration(per), Burst: burst}
		_ = l.String()
		err := alg.Validate(l)
		pol, perr := alg.prepare(l)
		if (err == nil) != (perr == nil) {
			t.Fatalf("Validate %v, prepare %v", err, perr)
		}
		if err != nil {
			if !(errors.Is(err, ErrInvalidLimit) || errors.Is(err, ErrInvalidOption)) || !strings.HasPrefix(err.Error(), "ratelimit:") {
				t.Fatalf("%v on %v: untyped error %v", l, alg, err)
			}
			if alg == TokenBucket && l.Validate() == nil {
				t.Fatalf("Limit.Validate accepts %v, the token bucket does not: %v", l, err)
			}
			return
		}
		checkPolicy(t, alg, l, pol)
		lim, err := New(client, l, WithAlgorithm(alg), WithNamespace("fuzz"), WithTimeout(5*time.Second))
		if err != nil {
			t.Fatalf("New with a valid %v: %v", l, err)
		}
		res, err := lim.AllowN(context.Background(), "id", pol.capacity)
		if err != nil || !res.Allowed || res.Remaining != 0 {
			t.Fatalf("%v %v: the full burst on a fresh identity: %+v %v", alg, l, res, err)
		}
		if err := lim.Reset(context.Background(), "id"); err != nil {
			t.Fatal(err)
		}
	})
}

// checkPolicy checks the script parameters of an accepted limit.
func checkPolicy(t *testing.T, alg Algorithm, l Limit, pol policy) {
	t.Helper()
	exact := func(name string, v, lo int64) {
		if v < lo || v > maxExact {
			t.Fatalf("%v %v: %s = %d outside [%d, 2^53)", alg, l, name, v, lo)
		}
	}
	mul := func(a, b int64) *big.Int { return new(big.Int).Mul(big.NewInt(a), big.NewInt(b)) }
	perUS := l.Per.Microseconds()
	if time.Duration(perUS)*time.Microsecond != l.Per {
		t.Fatalf("%v: Per is not a whole number of µs", l)
	}
	exact("capacity", pol.capacity, 1)
	if pol.capacity != l.Capacity() {
		t.Fatalf("%v %v: capacity %d, want %d", alg, l, pol.capacity, l.Capacity())
	}
	switch alg {
	case TokenBucket:
		// rate units a µs, per units a token, burst tokens.
		exact("rate", pol.a, 1)
		exact("per", pol.b, 1)
		exact("burst", pol.c, 1)
		if mul(pol.c, pol.b).Cmp(big.NewInt(maxExact)) > 0 {
			t.Fatalf("%v: burst × per = %v past 2^53", l, mul(pol.c, pol.b))
		}
		// pol.a/pol.b tokens a µs is exactly Rate/perUS.
		if mul(pol.a, perUS).Cmp(mul(l.Rate, pol.b)) != 0 {
			t.Fatalf("%v: %d/%d units is not %d per %d µs", l, pol.a, pol.b, l.Rate, perUS)
		}
	case FixedWindow, SlidingLog:
		exact("quota", pol.a, 1)
		exact("window", pol.b, 1)
		if pol.a != l.Rate || pol.b != perUS || pol.c != 0 || pol.b > maxExact/4 {
			t.Fatalf("%v %v: policy %+v", alg, l, pol)
		}
	case SlidingWindow:
		exact("quota", pol.a, 1)
		exact("ticks", pol.b, 1)
		exact("tick", pol.c, 1)
		if pol.a != l.Rate || pol.b*pol.c != perUS || pol.b > maxExact/pol.a || pol.b > maxExact/4/pol.c {
			t.Fatalf("%v %v: policy %+v", alg, l, pol)
		}
	default:
		t.Fatalf("%v accepted a limit", alg)
	}
}

// scriptCase is a script of the fuzz target, with good arguments and the
// positions the fuzzer's six strings replace.
type scriptCase struct {
	s     scriptRunner
	keys  []string
	good  []string
	slots []int // indexes into good replaced by the fuzzed arguments
	check func(reply []int64) bool
	// algKey, when > 0, is the index of an argument naming the first key's
	// algorithm: that key's name then ends with the argument, as the
	// library's keys (<ns>:<alg>:{id}) always name their algorithm. One key
	// never holds two algorithms' state, which have different Redis types.
	algKey int
}

// keysFor returns the keys of a call with args.
func (sc scriptCase) keysFor(args []any) []string {
	if sc.algKey == 0 {
		return sc.keys
	}
	keys := append([]string(nil), sc.keys...)
	keys[0] += ":" + fmt.Sprint(args[sc.algKey])
	return keys
}

var fuzzScripts = []scriptCase{
	{tokenBucketScript, []string{"f:{x}"}, []string{"1", "6000000", "10", "1", "1", "0"}, []int{0, 1, 2, 3, 4, 5}, saneReply(10), 0},
	{slidingWindowScript, []string{"f:{x}"}, []string{"10", "60000000", "1", "1", "1", "0"}, []int{0, 1, 2, 3, 4, 5}, saneReply(10), 0},
	{slidingLogScript, []string{"f:{x}", "f:{x}:meta"}, []string{"10", "60000000", "0", "1", "1", "0"}, []int{0, 1, 2, 3, 4, 5}, saneReply(10), 0},
	{fixedWindowScript, []string{"f:{x}"}, []string{"10", "60000000", "0", "1", "1", "0"}, []int{0, 1, 2, 3, 4, 5}, saneReply(10), 0},
	{concurrencyScript, []string{"f:{x}", "f:{x}:meta"}, []string{"4", "10000000", "ab12", "1", "1", "0"}, []int{0, 1, 2, 3, 4, 5}, saneReply(4), 0},
	// multi: count, mode and the first quota (algorithm, a, b, c; cost
	// stays) are fuzzed; the second quota stays good.
	{multiScript, []string{"f:{x}:a", "f:{x}:b"}, []string{"2", "1", "0", "1", "1", "6000000", "10", "1", "4", "10", "60000000", "0", "1"}, []int{0, 1, 3, 4, 5, 6}, saneMultiReply(10, 10), 3},
	// The decision function of the functions library, as the script.
	{tokenBucketFunction, []string{"f:{x}"}, []string{"1", "6000000", "10", "1", "1", "0"}, []int{0, 1, 2, 3, 4, 5}, saneReply(10), 0},
	{slidingWindowFunction, []string{"f:{x}"}, []string{"10", "60000000", "1", "1", "1", "0"}, []int{0, 1, 2, 3, 4, 5}, saneReply(10), 0},
	{slidingLogFunction, []string{"f:{x}", "f:{x}:meta"}, []string{"10", "60000000", "0", "1", "1", "0"}, []int{0, 1, 2, 3, 4, 5}, saneReply(10), 0},
	{fixedWindowFunction, []string{"f:{x}"}, []string{"10", "60000000", "0", "1", "1", "0"}, []int{0, 1, 2, 3, 4, 5}, saneReply(10), 0},
}

// saneReply accepts a decision reply: allowed 0 or 1, remaining within the
// capacity, non-negative times, and now.
func saneReply(capacity int64) func([]int64) bool {
	return func(r []int64) bool {
		return len(r) == 5 && (r[0] == 0 || r[0] == 1) && r[1] >= 0 && r[1] <= capacity && r[2] >= 0 && r[3] >= 0 && r[4] > 0
	}
}

// saneMultiReply accepts a reply of multi.lua: allowed and now, then a sane
// decision per quota.
func saneMultiReply(capacities ...int64) func([]int64) bool {
	return func(r []int64) bool {
		if len(r) != 2+4*len(capacities) || (r[0] != 0 && r[0] != 1) || r[1] <= 0 {
			return false
		}
		for i, c := range capacities {
			if !saneReply(c)(append(r[2+4*i:2+4*i+4:2+4*i+4], 1)) {
				return false
			}
		}
		return true
	}
}

// FuzzScriptArgs sends each Lua script arbitrary strings in its arguments,
// on a real redis-server, over state a good call wrote. A call is either
// refused with the script's own error reply ("ratelimit: ..." — never a Lua
// runtime error) leaving the state exactly as it was, or accepted; then no
// key is left without a TTL, and the state stays readable: the good call
// still succeeds with a sane reply. Arbitrary ARGV never corrupts what the
// limiter stored.
func FuzzScriptArgs(f *testing.F) {
	for i, sc := range fuzzScripts {
		a := make([]string, 6)
		for j, slot := range sc.slots {
			a[j] = sc.good[slot]
		}
		f.Add(uint8(i), a[0], a[1], a[2], a[3], a[4], a[5])
	}
	f.Add(uint8(0), "1e3", "0x10", " 5", "+5", "inf", "nan")
	f.Add(uint8(2), "10", "60000000", "0", "10", "2", "9007199254740991")
	f.Add(uint8(4), "4", "10000000", "AB:12", "1", "3", "0")
	f.Add(uint8(5), "1", "1", "0", "1", "1", "1")
	f.Add(uint8(6), "1e3", "0x10", " 5", "+5", "inf", "nan")
	f.Add(uint8(8), "10", "60000000", "0", "10", "2", "9007199254740991")
	// One server per fuzzing process (each worker runs this function).
	c := redistest.Start(f).Client(f)
	f.Fuzz(func(t *testing.T, which uint8, a0, a1, a2, a3, a4, a5 string) {
		sc := fuzzScripts[int(which)%len(fuzzScripts)]
		ctx := context.Background()
		if err := c.FlushDB(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		good := make([]any, len(sc.good))
		for i, v := range sc.good {
			good[i] = v
		}
		if _, err := sc.s.Run(ctx, c, sc.keysFor(good), good...).Int64Slice(); err != nil {
			t.Fatalf("good call: %v", err)
		}
		before := snapshot(t, c)
		args := make([]any, len(good))
		copy(args, good)
		if sc.s == concurrencyScript {
			args[2] = "cd34" // another lease than the good call's
		}
		for i, v := range []string{a0, a1, a2, a3, a4, a5} {
			args[sc.slots[i]] = v
		}
		reply, err := sc.s.Run(ctx, c, sc.keysFor(args), args...).Int64Slice()
		if err != nil {
			if !strings.Contains(err.Error(), "ratelimit:") {
				t.Fatalf("ARGV %q: %v is not the script's own error reply", args, err)
			}
			if after := snapshot(t, c); !equalMaps(before, after) {
				t.Fatalf("ARGV %q refused (%v) but the state changed:\nbefore %v\nafter  %v", args, err, before, after)
			}
			return
		}
		if sc.s == multiScript && len(reply) != 10 || sc.s != multiScript && len(reply) != 5 {
			t.Fatalf("ARGV %q: reply %v", args, reply)
		}
		keys, _ := c.Keys(ctx, "*").Result()
		for _, k := range keys {
			if ttl := c.PTTL(ctx, k).Val(); ttl < 0 {
				t.Fatalf("ARGV %q left key %s without a TTL (%v)", args, k, ttl)
			}
		}
		if sc.s == concurrencyScript {
			good[2] = "ef56" // a fresh lease
		}
		after, err := sc.s.Run(ctx, c, sc.keysFor(good), good...).Int64Slice()
		if err != nil || !sc.check(after) {
			t.Fatalf("after ARGV %q (reply %v), the good call gets %v %v", args, reply, after, err)
		}
	})
}
