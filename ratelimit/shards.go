package ratelimit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
)

// maxShards bounds WithShards.
const maxShards = 64

// WithShards splits each identity's limit over n sub-buckets (shards) in n
// different Redis Cluster slots, spread evenly over the slot space, so that
// on a Cluster whose masters hold equal ranges of slots (as redis-cli
// --cluster create makes them) one hot identity's decisions spread over
// min(n, masters) masters instead of one. Off (1) by default.
//
// Each shard has rate/n and burst/n of the limit (remainders go to the first
// shards, so the shards add up to the limit exactly); a call takes its cost
// from one shard: it starts at a random one, and on a denial asks the next,
// up to WithShardTries shards (all by default), before it is denied. So:
//   - it never admits more than the limit: over any interval, what all the
//     shards admit is at most burst + rate × elapsed, the sum of their own
//     bounds;
//   - it may deny while the limit has room (fragmentation): a cost fits one
//     shard only, so up to n × (cost - 1) units can be spread too thin to
//     use, and shards not asked (fewer tries than shards) are not seen. With
//     cost 1 and every shard tried, a denial means every shard is empty;
//   - a cost above the smallest shard's burst can never be allowed
//     (ErrInvalidCost);
//   - a denial costs up to one round trip per shard tried.
//
// A Result is the deciding shard's: Remaining is what is left in that shard,
// RetryAfter (of a denial) the soonest any shard tried could take the cost.
// Peek reports the whole limit (Remaining of all shards). Its Event names
// the shard (Event.Shard). Refund gives back to the shard the spend was
// taken from, so it needs the Result of that AllowN. Rate and burst must be
// at least n. It applies to New only (ErrInvalidOption elsewhere), with
// every algorithm.
func WithShards(n int) Option {
	return optionFunc(func(c *config) error {
		if n < 1 || n > maxShards {
			return fmt.Errorf("%w: %d shards, want 1 to %d", ErrInvalidOption, n, maxShards)
		}
		c.shards = n
		return nil
	})
}

// WithShardTries sets how many shards a call of a limiter with WithShards
// asks before it is denied: 1 to the number of shards, which is the
// default. Fewer tries make a denial cheaper and let more capacity go unseen.
func WithShardTries(tries int) Option {
	return optionFunc(func(c *config) error {
		if tries < 1 || tries > maxShards {
			return fmt.Errorf("%w: %d shard tries, want 1 to %d", ErrInvalidOption, tries, maxShards)
		}
		c.shardTries = tries
		return nil
	})
}

// shardLimit is the share of limit that shard i of n gets: rate and burst
// split as evenly as integers allow, the remainders to the first shards.
func shardLimit(limit Limit, i, n int) Limit {
	part := func(v int64) int64 {
		q := v / int64(n)
		if int64(i) < v%int64(n) {
			q++
		}
		return q
	}
	return Limit{Rate: part(limit.Rate), Per: limit.Per, Burst: part(limit.Capacity())}
}

// shardPolicies prepares the shards' limits for a.
func shardPolicies(a Algorithm, limit Limit, n int) ([]policy, error) {
	if limit.Rate < int64(n) || limit.Capacity() < int64(n) {
		return nil, fmt.Errorf("%w: %v split over %d shards leaves a shard with nothing (rate and burst must be >= the shards)", ErrInvalidLimit, limit, n)
	}
	pols := make([]policy, n)
	for i := range pols {
		pol, err := a.prepare(shardLimit(limit, i, n))
		if err != nil {
			return nil, fmt.Errorf("%w (shard %d of %d)", err, i+1, n)
		}
		pols[i] = pol
	}
	return pols, nil
}

// shardKeys returns the keys of identity's n shards: the key of shard i is
// <prefix>{<hex>.<s>}, with s the smallest number that puts it in the i-th
// n-th of the slot space, found by continuing the hash tag's CRC16 over the
// suffix only. The same identity always gets the same keys.
func (k *keyer) shardKeys(identity string, n int) ([]string, error) {
	if err := validIdentity(identity); err != nil {
		return nil, err
	}
	var sum []byte
	if k.secret != nil {
		s := k.pool.Get().(*keyScratch)
		s.mac.Reset()
		s.mac.Write([]byte(identity))
		sum = s.mac.Sum(nil)
		k.pool.Put(s)
	} else {
		h := sha256.Sum256([]byte(identity))
		sum = h[:]
	}
	tag := hex.EncodeToString(sum)
	base := crc16([]byte(tag), 0)
	keys := make([]string, n)
	var buf [24]byte
	for i := range keys {
		lo, hi := uint16(i*16384/n), uint16((i+1)*16384/n)
		for s := 0; ; s++ {
			suffix := strconv.AppendInt(append(buf[:0], '.'), int64(s), 10)
			if slot := crc16(suffix, base) & 16383; slot >= lo && slot < hi {
				keys[i] = k.prefix + tag + string(suffix) + "}"
				break
			}
		}
	}
	return keys, nil
}

// crc16 continues Redis Cluster's CRC16 (XMODEM) from crc over b.
func crc16(b []byte, crc uint16) uint16 {
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// firstShard picks the shard a call starts at.
func firstShard(n int) int { return rand.IntN(n) }
