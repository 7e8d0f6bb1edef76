// Package securitytest holds the test that no raw identity leaks from the
// library: decisions on guessable identities run through every subscriber
// (slog, Prometheus, OpenTelemetry) and the HTTP middleware at once, and
// each output, and every key and value in Redis, is scanned for them. It
// holds only tests; it exists because the subscriber packages must not
// import each other.
package securitytest
