// Command gin serves a gin-gonic/gin engine whose /api group is limited per
// client address by ratelimit's httplimit middleware: five requests a
// minute, then 429 with the RateLimit fields and Retry-After.
//
//	go run ./gin                                 # embedded Redis, on 127.0.0.1:8080
//	REDIS_URL=redis://localhost:6379/0 go run ./gin
package main

import (
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/examples/frameworks/internal/redisenv"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit/httplimit"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	rdb, where, closeRedis, err := redisenv.Open()
	if err != nil {
		log.Fatal(err)
	}
	defer closeRedis()
	r, err := newEngine(rdb)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("gin on http://%s/api/hello (Redis: %s)", *addr, where)
	srv := &http.Server{Addr: *addr, Handler: r, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

// [readme gin]
// ginLimit adapts the middleware to gin. gin has no wrapper of its own
// for func(http.Handler) http.Handler: the adapter runs the rest of gin's
// chain (c.Next) from inside mw.Handler, after setting c.Request to the
// request whose context carries the Decision (read it with
// c.Request.Context(); gin.Context.Value reaches it only with
// ContextWithFallback). When the limit answers itself (429, 503, 400)
// through c.Writer, c.Abort keeps gin from running the handlers after it.
func ginLimit(mw *httplimit.Middleware) gin.HandlerFunc {
	return func(c *gin.Context) {
		passed := false
		mw.Handler(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			passed = true
			c.Request = r
			c.Next()
		})).ServeHTTP(c.Writer, c.Request)
		if !passed {
			c.Abort()
		}
	}
}

func newEngine(rdb redis.UniversalClient) (*gin.Engine, error) {
	lim, err := ratelimit.New(rdb, ratelimit.PerMinute(5), ratelimit.WithNamespace("api"))
	if err != nil {
		return nil, err
	}
	mw, err := httplimit.New(lim) // per client address, draft-11 headers
	if err != nil {
		return nil, err
	}

	r := gin.New()
	r.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok\n") })
	api := r.Group("/api", ginLimit(mw))
	api.GET("/hello", func(c *gin.Context) {
		d, _ := httplimit.FromContext(c.Request.Context()) // the decision, for the handler
		c.String(http.StatusOK, "hello, %d left\n", d.Result.Remaining)
	})
	return r, nil
}

// [readme end]
