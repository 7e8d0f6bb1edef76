// Command echo serves a labstack/echo application whose /api group is
// limited per client address by ratelimit's httplimit middleware: five
// requests a minute, then 429 with the RateLimit fields and Retry-After.
//
//	go run ./echo                                # embedded Redis, on 127.0.0.1:8080
//	REDIS_URL=redis://localhost:6379/0 go run ./echo
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"

	"github.com/labstack/echo/v4"
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
	e, err := newEcho(rdb)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("echo on http://%s/api/hello (Redis: %s)", *addr, where)
	log.Fatal(e.Start(*addr))
}

// [readme echo]
// echoLimit adapts the middleware to echo. echo.WrapMiddleware runs the
// rest of echo's chain from inside mw.Handler, after c.SetRequest(r): the
// request that reaches the handler is the one whose context carries the
// Decision (c.Request().Context()). When the limit answers itself (429,
// 503, 400), the chain is not run and nil is returned: the response is
// already written, and echo's HTTPErrorHandler must not write another.
func echoLimit(mw *httplimit.Middleware) echo.MiddlewareFunc {
	return echo.WrapMiddleware(mw.Handler)
}

func newEcho(rdb redis.UniversalClient) (*echo.Echo, error) {
	lim, err := ratelimit.New(rdb, ratelimit.PerMinute(5), ratelimit.WithNamespace("api"))
	if err != nil {
		return nil, err
	}
	mw, err := httplimit.New(lim) // per client address, draft-11 headers
	if err != nil {
		return nil, err
	}

	e := echo.New()
	e.HideBanner = true
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	api := e.Group("/api", echoLimit(mw))
	api.GET("/hello", func(c echo.Context) error {
		d, _ := httplimit.FromContext(c.Request().Context()) // the decision, for the handler
		return c.String(http.StatusOK, fmt.Sprintf("hello, %d left\n", d.Result.Remaining))
	})
	return e, nil
}

// [readme end]
