package ratelimit

import (
	"fmt"
	"sync"
	"time"
)

// WithDenyCache turns on a cache of denials in this process, for at most
// maxKeys identities: a denial by Redis is remembered until its RetryAfter
// has passed, and answers the calls of the same identity, under the same
// limit, of the same or a larger cost at once, without Redis. Off by
// default; for identities that keep calling while over their limit (abuse,
// retry storms), whose calls then cost Redis nothing.
//
// It never admits anything Redis would deny: until RetryAfter passes, a
// larger cost cannot fit either (tokens and window counts only grow back
// with time). It may deny what Redis would allow: a refund or a Reset made
// by another process frees capacity this process does not see until the
// remembered RetryAfter passes (its own Refund and Reset forget the
// identity's denial at once).
//
// Every call is still published; a cached denial has Reason ReasonCached,
// the Remaining of the denial it remembers, the RetryAfter left, and no
// Redis time (Start, Duration and Result.Time are zero). Only AllowN (and
// so Allow and Wait) consults it: Peek and BatchAllow always ask Redis. It
// applies to New only, and not in shadow mode (ErrInvalidOption).
func WithDenyCache(maxKeys int) Option {
	return optionFunc(func(c *config) error {
		if maxKeys < 1 {
			return fmt.Errorf("%w: deny cache of %d keys must be >= 1", ErrInvalidOption, maxKeys)
		}
		c.denyCache = maxKeys
		return nil
	})
}

// denyShards splits the cache, so that concurrent callers seldom share a
// lock.
const denyShards = 16

// denyCache remembers recent denials per key (see WithDenyCache).
type denyCache struct {
	perShard int
	shards   [denyShards]denyShard
}

type denyShard struct {
	mu sync.Mutex
	m  map[string]denial
}

// denial is one remembered denial: of cost under limit, until until.
type denial struct {
	limit     Limit
	cost      int64
	at, until time.Time // when it was decided, when its RetryAfter ends
	res       Result
}

func newDenyCache(maxKeys int) *denyCache {
	c := &denyCache{perShard: max(1, (maxKeys+denyShards-1)/denyShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[string]denial)
	}
	return c
}

// shard picks key's shard from its last bytes: the hex of a hash, before
// the closing brace of the hash tag.
func (c *denyCache) shard(key string) *denyShard {
	var h uint32 = 2166136261
	for i := max(0, len(key)-8); i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return &c.shards[h%denyShards]
}

// get returns the remembered denial that answers a call of cost under limit
// at now, and whether there is one.
func (c *denyCache) get(key string, limit Limit, cost int64, now time.Time) (Result, bool) {
	s := c.shard(key)
	s.mu.Lock()
	d, ok := s.m[key]
	s.mu.Unlock()
	if !ok || d.limit != limit || cost < d.cost || !now.Before(d.until) {
		return Result{}, false
	}
	res := d.res
	res.Reason, res.Time = ReasonCached, time.Time{}
	res.RetryAfter = d.until.Sub(now)
	res.ResetAfter = max(d.res.ResetAfter-now.Sub(d.at), res.RetryAfter)
	return res, true
}

// put remembers a denial of cost under limit, decided at now. When the
// shard is full, expired denials make room, or else one other.
func (c *denyCache) put(key string, limit Limit, cost int64, res Result, now time.Time) {
	if res.RetryAfter <= 0 {
		return
	}
	d := denial{limit: limit, cost: cost, at: now, until: now.Add(res.RetryAfter), res: res}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[key]; ok && old.limit == limit && old.cost < cost && now.Before(old.until) {
		return // a smaller cost is denied already, and answers this one too
	}
	if _, ok := s.m[key]; !ok && len(s.m) >= c.perShard {
		for k, old := range s.m {
			if !now.Before(old.until) {
				delete(s.m, k)
			}
		}
		if len(s.m) >= c.perShard {
			for k := range s.m { // map order: an arbitrary one
				delete(s.m, k)
				break
			}
		}
	}
	s.m[key] = d
}

// forget drops key's denial: its capacity came back.
func (c *denyCache) forget(key string) {
	s := c.shard(key)
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
}
