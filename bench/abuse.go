package main

import (
	"fmt"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// abuseMix is the traffic of the abuse cases: most calls come from a few
// identities far over their limit, the rest from many well-behaved ones,
// all on one limiter with a low limit.
type abuseMix struct {
	abusers int // identities "abuser:0".. over their limit
	good    int // identities "user:0".. well under it
	// every is the period of good calls in the sequence: one call in
	// every is from a good identity (10: 10%).
	every int
	limit ratelimit.Limit
}

// theAbuse: 90% of calls from 16 identities, 10% from 10,000. At the
// 100k–200k calls/s this machine does, an abuser calls some 5,000–10,000
// times a second against a limit of 10, and a good identity once or twice
// a second: the good ones are never denied, the abusers almost always.
var theAbuse = &abuseMix{abusers: 16, good: manyKeys, every: 10, limit: ratelimit.PerSecond(10)}

// keys returns the sequence of identities the callers walk, and for each
// the abuser it is (-1 for a good identity). The sequence holds each good
// identity once, so a caller comes back to a good identity only after
// every*good calls.
func (m *abuseMix) keys() (keys []string, who []int) {
	n := m.good * m.every
	keys, who = make([]string, n), make([]int, n)
	for i := range n {
		if i%m.every == m.every-1 {
			keys[i], who[i] = fmt.Sprintf("user:%d", i/m.every), -1
			continue
		}
		a := (i - i/m.every) % m.abusers
		keys[i], who[i] = fmt.Sprintf("abuser:%d", a), a
	}
	return keys, who
}

// bound is the most an abuser may be admitted over elapsed Redis time from
// an untouched (full) bucket: burst + rate × elapsed, rounded down.
func (m *abuseMix) bound(elapsed time.Duration) int64 {
	l := m.limit
	return l.Capacity() + int64(float64(l.Rate)*float64(elapsed)/float64(l.Per))
}

// denyCacheKeys is the deny cache's bound in the abuse case: room for every
// abuser (good identities are never denied, so never remembered).
const denyCacheKeys = 1024

// abuseCases are the abuse mix on this library, without and with the deny
// cache.
func abuseCases() []benchCase {
	lim := theAbuse.limit
	note := fmt.Sprintf("this library, token bucket, pipelined, limit %d per %v (burst %d); %d%% of calls from %d identities over that limit, "+
		"the rest from %s well-behaved identities; only at 64 callers",
		lim.Rate, lim.Per, lim.Capacity(), 100-100/theAbuse.every, theAbuse.abusers, thousands(float64(theAbuse.good)))
	return []benchCase{
		{Name: "abuse", Label: "ratelimit under abuse, no deny cache",
			Note:  note + ", no deny cache",
			setup: ours(ourOpts{pipelining: true, limit: lim}),
			only:  atTargetCell, abuse: theAbuse},
		{Name: denyCacheCase, Label: "ratelimit under abuse, deny cache",
			Note:  fmt.Sprintf("%s, WithDenyCache(%d)", note, denyCacheKeys),
			setup: ours(ourOpts{pipelining: true, limit: lim, extra: []ratelimit.Option{ratelimit.WithDenyCache(denyCacheKeys)}}),
			only:  atTargetCell, abuse: theAbuse},
	}
}
