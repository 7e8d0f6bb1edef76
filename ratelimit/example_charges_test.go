package ratelimit_test

import (
	"context"
	"fmt"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// A Charger decides charges of different identities and limits all or
// nothing: here a per-client and a per-route limit, as the descriptors of
// an Envoy rate limit request. Once the route's limit is used up, the call
// is denied and the client's limit is not charged either.
func ExampleCharger_AllowAll() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	charger, err := ratelimit.NewCharger(rdb, ratelimit.WithNamespace("edge"))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	client := ratelimit.Charge{Identity: "remote_address=10.0.0.1", Limit: ratelimit.PerMinute(10),
		Algorithm: ratelimit.FixedWindow, Cost: 1, Name: "per_client"}
	route := ratelimit.Charge{Identity: "path=/login", Limit: ratelimit.PerMinute(2),
		Algorithm: ratelimit.FixedWindow, Cost: 1, Name: "per_route"}
	for range 3 {
		res, err := charger.AllowAll(ctx, client, route)
		if err != nil {
			fmt.Println("backend error:", err)
		}
		fmt.Printf("allowed=%v decided by %s; client has %d left\n", res.Allowed, res.Quota, res.Quotas[0].Remaining)
	}
	// Output:
	// allowed=true decided by per_route; client has 9 left
	// allowed=true decided by per_route; client has 8 left
	// allowed=false decided by per_route; client has 8 left
}
