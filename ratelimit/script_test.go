package ratelimit

import (
	"context"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// hostile are ARGV values no caller of this package sends: each must be
// answered with an error reply, before anything is written.
var hostile = []any{"abc", "", "1.5", "-1", "nan", "inf", "-inf", "1e400", "9007199254740992", "1e300"}

var validLeaseID = regexp.MustCompile(`^[0-9a-f]{1,64}$`)

// snapshot returns every key's type and content, to compare before and after.
func snapshot(t *testing.T, c redis.UniversalClient) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	for _, k := range c.Keys(ctx, "*").Val() {
		switch typ := c.Type(ctx, k).Val(); typ {
		case "string":
			out[k] = c.Get(ctx, k).Val()
		case "hash":
			out[k] = fmt.Sprint(c.HGetAll(ctx, k).Val())
		case "zset":
			out[k] = fmt.Sprint(c.ZRangeWithScores(ctx, k, 0, -1).Val())
		case "list":
			out[k] = "list " + fmt.Sprint(c.LRange(ctx, k, 0, -1).Val())
		default:
			out[k] = typ
		}
	}
	return out
}

// TestHostileArguments sends each script bad ARGV in every position, on
// state written by a good call, and checks for an error reply and unchanged
// state.
func TestHostileArguments(t *testing.T) {
	type script struct {
		name string
		s    scriptRunner
		keys []string
		good []any
		// bad are whole argument lists that are wrong as a whole.
		bad [][]any
	}
	k1 := []string{"h:{x}"}
	k2 := []string{"h:{x}", "h:{x}:meta"}
	scripts := []script{
		{"token_bucket", tokenBucketScript, k1, []any{1, 6000000, 10, 1, 1, 0}, [][]any{
			{1, 6000000, 10, 11, 1, 0},     // cost above burst
			{1, 1 << 40, 1 << 20, 1, 1, 0}, // capacity past 2^53
			{1, 6000000, 10, 1, 3, 0},      // unknown mode
			{1, 6000000, 10, 1, 1},         // missing now
		}},
		{"fixed_window", fixedWindowScript, k1, []any{10, 60000000, 0, 1, 1, 0}, [][]any{
			{10, 60000000, 0, 11, 1, 0},        // cost above quota
			{10, 60000000, 1, 1, 1, 0},         // ARGV[3] must be 0
			{10, 4000000000000000, 0, 1, 1, 0}, // window past 2^51
		}},
		{"sliding_window", slidingWindowScript, k1, []any{10, 60000000, 1, 1, 1, 0}, [][]any{
			{10, 60000000, 1, 11, 1, 0},        // cost above quota
			{1000000, 86400000000, 1, 1, 1, 0}, // quota × ticks past 2^53
			{10, 60000000, 0, 1, 1, 0},         // zero tick
		}},
		{"sliding_log", slidingLogScript, k2, []any{10, 60000000, 0, 1, 1, 0}, [][]any{
			{10, 60000000, 0, 11, 1, 0},
			{10, 60000000, 0, 1, 2, -5},
		}},
		{"concurrency", concurrencyScript, k2, []any{4, 10000000, "ab12", 1, 1, 0}, [][]any{
			{4, 10000000, "AB12", 1, 1, 0},  // upper-case id
			{4, 10000000, "ab:12", 1, 1, 0}, // separator in id
			{4, 10000000, strings.Repeat("a", 65), 1, 1, 0},
			{4, 10000000, "ab12", 5, 1, 0}, // weight above max
			{4, 10000000, "ab12", 0, 1, 0}, // acquire of weight 0
			{4, 10000000, "ab12", 1, 4, 0}, // unknown op
		}},
		{"multi", multiScript, []string{"a:{x}", "b:{x}"}, []any{2, 1, 0, 1, 1, 6000000, 10, 1, 4, 10, 60000000, 0, 1}, [][]any{
			{1, 1, 0, 1, 1, 6000000, 10, 1},                         // count differs from #KEYS
			{2, 1, 0, 1, 1, 6000000, 10, 1, 4, 10, 60000000, 0},     // a missing cost
			{2, 1, 0, 3, 10, 60000000, 0, 1, 4, 10, 60000000, 0, 1}, // sliding log is not available
			{2, 1, 0, 1, 1, 6000000, 10, 11, 4, 10, 60000000, 0, 1}, // cost above burst
			{2, 1, 0, 1, 1, 6000000, 10, 1, 4, 10, 60000000, 0, 11}, // cost above quota
			{2, 1, 0, 1, 1, 6000000, 10, 1, 4, 10, 60000000, 5, 1},  // fixed window ARGV c must be 0
			{2, 3, 0, 1, 1, 6000000, 10, 1, 4, 10, 60000000, 0, 1},  // unknown mode
			{2, 1, 0, 1, 1, 6000000, 0, 0, 4, 10, 60000000, 0, 1},   // token bucket burst 0
			{2, 1, 0, 2, 10, 60000000, 0, 1, 4, 10, 60000000, 0, 1}, // sliding window tick 0
			{2, 1, 0, 0, 1, 6000000, 10, 1, 4, 10, 60000000, 0, 1},  // algorithm 0 is none
		}},
	}
	// The decision function runs the same checks: the same tables, on
	// real Redis (miniredis has no functions).
	for _, sc := range scripts[:4] {
		fn := map[string]scriptRunner{"token_bucket": tokenBucketFunction, "fixed_window": fixedWindowFunction,
			"sliding_window": slidingWindowFunction, "sliding_log": slidingLogFunction}[sc.name]
		scripts = append(scripts, script{sc.name + "_function", fn, sc.keys, sc.good, sc.bad})
	}
	for _, b := range backends(t) {
		for _, sc := range scripts {
			if strings.HasSuffix(sc.name, "_function") && b.name != "redis" {
				continue
			}
			t.Run(sc.name+"/"+b.name, func(t *testing.T) {
				ctx := context.Background()
				if err := b.client.FlushAll(ctx).Err(); err != nil {
					t.Fatal(err)
				}
				good := sc.good
				if sc.name == "concurrency" { // a fresh id, so the good call can run again
					good = append([]any(nil), good...)
					good[2] = "cd34"
				}
				if _, err := sc.s.Run(ctx, b.client, sc.keys, good...).Int64Slice(); err != nil {
					t.Fatalf("good arguments %v: %v", good, err)
				}
				if sc.name == "concurrency" {
					// hold "ab12" too: hostile arguments meet a held lease
					if _, err := sc.s.Run(ctx, b.client, sc.keys, sc.good...).Int64Slice(); err != nil {
						t.Fatal(err)
					}
				}
				before := snapshot(t, b.client)
				if len(before) == 0 {
					t.Fatal("the good call wrote nothing: the test proves nothing")
				}
				var cases [][]any
				for i := range sc.good {
					for _, h := range hostile {
						if sc.name == "concurrency" && i == 2 && validLeaseID.MatchString(fmt.Sprint(h)) {
							continue // a well-formed id ("abc"): not hostile
						}
						args := append([]any(nil), sc.good...)
						args[i] = h
						cases = append(cases, args)
					}
				}
				cases = append(cases, sc.bad...)
				for _, args := range cases {
					_, err := sc.s.Run(ctx, b.client, sc.keys, args...).Int64Slice()
					if err == nil {
						t.Errorf("ARGV %v: no error", args)
						continue
					}
					if !strings.Contains(err.Error(), "ratelimit:") {
						t.Errorf("ARGV %v: %v is not the script's own error reply", args, err)
					}
				}
				if after := snapshot(t, b.client); !reflect.DeepEqual(before, after) {
					t.Fatalf("hostile arguments changed the state:\nbefore %v\nafter  %v", before, after)
				}
			})
		}
	}
}
