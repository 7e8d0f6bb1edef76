// Package redisenv gives the framework examples their Redis: the one at
// REDIS_URL, or an embedded miniredis when it is unset, so that each
// example runs with a plain go run.
package redisenv

import (
	"errors"
	"net/url"
	"os"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Open returns a client of REDIS_URL, or of an embedded miniredis when
// REDIS_URL is empty, a description of which for the logs (never the URL,
// which may hold a password), and a function that closes both.
func Open() (rdb *redis.Client, where string, closeFn func(), err error) {
	if raw := os.Getenv("REDIS_URL"); raw != "" {
		o, err := redis.ParseURL(raw)
		if err != nil {
			var ue *url.Error // it repeats the URL
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, "", nil, errors.New("REDIS_URL: " + err.Error())
		}
		// The limiter's timeout (ratelimit.WithTimeout) cuts a call to a
		// stalled Redis short only with context deadlines on the socket.
		o.ContextTimeoutEnabled = true
		rdb := redis.NewClient(o)
		return rdb, "REDIS_URL", func() { _ = rdb.Close() }, nil
	}
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return nil, "", nil, err
	}
	rdb = redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	return rdb, "embedded miniredis", func() { _ = rdb.Close(); mr.Close() }, nil
}
