package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// Sentinel errors. The package's errors wrap one of these, so callers can
// test with errors.Is, with two exceptions: Wait ended by its context
// returns the context's cause, and a failure of crypto/rand in Acquire is
// returned as it is. The message names the bad value. A denial
// is never an error: it is a Result with Allowed false.
var (
	// ErrInvalidLimit reports a Limit that cannot be enforced: a rate, period
	// or burst that is zero, negative or too large to count exactly.
	ErrInvalidLimit = errors.New("ratelimit: invalid limit")
	// ErrInvalidCost reports a negative cost, or a cost above the burst
	// (which could never be allowed, so Wait would wait forever).
	ErrInvalidCost = errors.New("ratelimit: invalid cost")
	// ErrInvalidIdentity reports an empty identity, or one longer than
	// MaxIdentityLen bytes.
	ErrInvalidIdentity = errors.New("ratelimit: invalid identity")
	// ErrInvalidOption reports an option with a bad value, such as an empty
	// HMAC secret, a bad namespace or a non-positive timeout.
	ErrInvalidOption = errors.New("ratelimit: invalid option")
	// ErrNilClient reports a nil Redis client, including a nil
	// *redis.Client (or other client pointer) in a non-nil interface.
	ErrNilClient = errors.New("ratelimit: nil redis client")
	// ErrInvalidURL reports a Redis URL that cannot be parsed.
	ErrInvalidURL = errors.New("ratelimit: invalid redis URL")
	// ErrBackend reports that Redis could not decide: a connection error, a
	// timeout, or an error reply. It always comes as a *BackendError, and
	// the Result returned with it is the one the FailStrategy chose.
	ErrBackend = errors.New("ratelimit: backend error")
	// ErrWouldExceedDeadline is returned by Wait when the caller's deadline
	// comes before the cost could be allowed, so waiting is pointless.
	ErrWouldExceedDeadline = errors.New("ratelimit: wait would exceed the context deadline")
	// ErrCrossSlot is returned by a Charger made with WithStrictSlots for a
	// call whose charges lie in several Redis Cluster slots (on a Ring,
	// several hash tags): it cannot be one script, so nothing is decided.
	ErrCrossSlot = errors.New("ratelimit: charges span several Redis Cluster slots")
)

// ErrorType classifies a backend failure. Its String form is a short, bounded
// label, fit for a metric label or the OpenTelemetry error.type attribute.
type ErrorType uint8

// The kinds of backend failure.
const (
	// ErrorOther is any failure not classified below.
	ErrorOther ErrorType = iota
	// ErrorTimeout is the backend timeout (WithTimeout) or the caller's
	// deadline passing before Redis answered.
	ErrorTimeout
	// ErrorConnection is a failure to reach Redis: refused, reset or closed
	// connection, an exhausted pool, a closed client.
	ErrorConnection
	// ErrorScript is an error reply from Redis while running the script
	// (BUSY, OOM, READONLY, LOADING, a script error...).
	ErrorScript
	// ErrorCanceled is the caller's context being canceled.
	ErrorCanceled
	// ErrorCircuitOpen is a call the circuit breaker (WithBreaker)
	// answered without asking Redis; the error wraps ErrCircuitOpen.
	ErrorCircuitOpen
)

var errorTypeNames = [...]string{"other", "timeout", "connection", "script", "canceled", "circuit_open"}

// String returns "other", "timeout", "connection", "script", "canceled" or
// "circuit_open".
func (t ErrorType) String() string {
	if int(t) < len(errorTypeNames) {
		return errorTypeNames[t]
	}
	return "other"
}

// BackendError is the error returned (and published) when Redis could not
// decide. It matches ErrBackend with errors.Is and unwraps to the underlying
// error (a go-redis error, a net error, context.DeadlineExceeded...).
type BackendError struct {
	// Type classifies the failure.
	Type ErrorType
	// Code is the Redis error prefix ("BUSY", "OOM", "NOSCRIPT", "ERR"...)
	// when Redis replied with an error, else "".
	Code string
	// Err is the underlying error.
	Err error
}

// Error implements error.
func (e *BackendError) Error() string {
	return "ratelimit: backend " + e.Type.String() + " error: " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *BackendError) Unwrap() error { return e.Err }

// Is reports whether target is ErrBackend.
func (e *BackendError) Is(target error) bool { return target == ErrBackend }

// ErrorTypeOf returns the Type of the *BackendError in err's chain, and
// ErrorOther when there is none: the bounded label of a failure, for a
// metric label or the OpenTelemetry error.type attribute.
func ErrorTypeOf(err error) ErrorType {
	if be, ok := err.(*BackendError); ok {
		return be.Type
	}
	var be *BackendError
	if errors.As(err, &be) {
		return be.Type
	}
	return ErrorOther
}

// ctxErr returns why ctx ended: ctx.Err(), or its cause when one was given
// (context.WithCancelCause, WithTimeoutCause) together with ctx.Err(), so
// that classify and errors.Is still see Canceled or DeadlineExceeded.
func ctxErr(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if cause == nil || cause == err {
		return err
	}
	return fmt.Errorf("%w (%w)", cause, err)
}

// newBackendError wraps err, classified by its Type (see classify).
func newBackendError(err error) *BackendError {
	be := &BackendError{Err: err, Type: classify(err)}
	var rerr redis.Error
	if be.Type == ErrorScript && errors.As(err, &rerr) {
		msg := rerr.Error()
		if i := strings.IndexByte(msg, ' '); i > 0 {
			msg = msg[:i]
		}
		be.Code = msg
	}
	return be
}

func classify(err error) ErrorType {
	var netErr net.Error
	var rerr redis.Error
	switch {
	case errors.Is(err, context.Canceled):
		return ErrorCanceled
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return ErrorTimeout
	case errors.As(err, &netErr) && netErr.Timeout():
		return ErrorTimeout
	case errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, redis.ErrPoolExhausted), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return ErrorConnection
	case errors.As(err, &netErr):
		return ErrorConnection
	case errors.As(err, &rerr):
		return ErrorScript
	}
	return ErrorOther
}
