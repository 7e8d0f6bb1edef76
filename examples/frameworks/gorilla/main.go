// Command gorilla serves a gorilla/mux router whose /api routes are limited
// per client address by ratelimit's httplimit middleware: five requests a
// minute, then 429 with the RateLimit fields and Retry-After.
//
//	go run ./gorilla                             # embedded Redis, on 127.0.0.1:8080
//	REDIS_URL=redis://localhost:6379/0 go run ./gorilla
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/gorilla/mux"
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
	h, err := newRouter(rdb)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("gorilla/mux on http://%s/api/hello (Redis: %s)", *addr, where)
	srv := &http.Server{Addr: *addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

// [readme gorilla]
func newRouter(rdb redis.UniversalClient) (http.Handler, error) {
	lim, err := ratelimit.New(rdb, ratelimit.PerMinute(5), ratelimit.WithNamespace("api"))
	if err != nil {
		return nil, err
	}
	mw, err := httplimit.New(lim) // per client address, draft-11 headers
	if err != nil {
		return nil, err
	}

	r := mux.NewRouter()
	r.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	api := r.PathPrefix("/api").Subrouter()
	// mux.MiddlewareFunc is func(http.Handler) http.Handler. gorilla runs
	// middleware only once a route matched: a 404 costs nothing.
	api.Use(mw.Handler)
	api.HandleFunc("/hello", hello).Methods(http.MethodGet)
	return r, nil
}

func hello(w http.ResponseWriter, r *http.Request) {
	d, _ := httplimit.FromContext(r.Context()) // the decision, for the handler
	fmt.Fprintf(w, "hello, %d left\n", d.Result.Remaining)
}

// [readme end]
