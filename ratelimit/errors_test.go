package ratelimit

import (
	"context"
	"errors"
	"testing"
)

func TestErrorTypeOf(t *testing.T) {
	be := &BackendError{Type: ErrorCanceled, Err: context.Canceled}
	for err, want := range map[error]ErrorType{
		be:                                ErrorCanceled,
		errors.Join(errors.New("x"), be):  ErrorCanceled,
		errors.New("not a backend error"): ErrorOther,
	} {
		if got := ErrorTypeOf(err); got != want {
			t.Errorf("ErrorTypeOf(%v) = %v, want %v", err, got, want)
		}
	}
	if got := ErrorTypeOf(nil); got != ErrorOther {
		t.Errorf("ErrorTypeOf(nil) = %v, want other", got)
	}
}
