package ratelimit

import (
	"context"
	"errors"
	"strings"
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

// TestNameErrorShowsTheCharacter: a name with a character out of range names
// that character, not one byte of its UTF-8 encoding.
func TestNameErrorShowsTheCharacter(t *testing.T) {
	_, err := newConfig(forNew, []Option{WithNamespace("ümlaut")})
	if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), `'ü' at byte 0`) {
		t.Fatalf("namespace ümlaut: %v", err)
	}
	if err := validQuotaName("a€b"); !errors.Is(err, ErrInvalidLimit) || !strings.Contains(err.Error(), `'€' at byte 1`) {
		t.Fatalf("quota name a€b: %v", err)
	}
}
