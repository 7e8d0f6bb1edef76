package ratelimit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"sync"
)

// keyer turns identities into Redis keys:
//
//	<namespace>:<algorithm>:{<hex sha256(identity)>}
//
// The braces are a Redis Cluster hash tag around the hashed identity only:
// all keys of one identity share a slot, while identities spread over every
// shard. The raw identity never leaves the process.
type keyer struct {
	prefix string // "<namespace>:<algorithm>:{"
	secret []byte // HMAC key, or nil for plain SHA-256
	pool   sync.Pool
}

type keyScratch struct {
	buf []byte
	sum []byte
	mac hash.Hash // nil without a secret
}

// newKeyer returns a keyer whose keys start with prefix,
// "<namespace>:<algorithm>:".
func newKeyer(prefix string, secret []byte) *keyer {
	k := &keyer{prefix: prefix + "{", secret: secret}
	k.pool.New = func() any {
		s := &keyScratch{buf: make([]byte, 0, 256), sum: make([]byte, 0, sha256.Size)}
		if k.secret != nil {
			s.mac = hmac.New(sha256.New, k.secret)
		}
		return s
	}
	return k
}

func validIdentity(identity string) error {
	if identity == "" {
		return fmt.Errorf("%w: empty identity", ErrInvalidIdentity)
	}
	if len(identity) > MaxIdentityLen {
		return fmt.Errorf("%w: identity is %d bytes, the most is %d", ErrInvalidIdentity, len(identity), MaxIdentityLen)
	}
	return nil
}

// key returns the Redis key of identity. It allocates only the key string.
func (k *keyer) key(identity string) (string, error) {
	return k.format(identity, k.prefix, true)
}

// tag returns identity's hash tag alone, "{<hex>", for keys built around it
// (a MultiLimiter's per-quota keys). The caller appends "}" and a suffix.
func (k *keyer) tag(identity string) (string, error) {
	return k.format(identity, "{", false)
}

func (k *keyer) format(identity, prefix string, closeTag bool) (string, error) {
	if err := validIdentity(identity); err != nil {
		return "", err
	}
	s := k.pool.Get().(*keyScratch)
	s.buf = append(s.buf[:0], identity...)
	if s.mac != nil {
		s.mac.Reset()
		s.mac.Write(s.buf)
		s.sum = s.mac.Sum(s.sum[:0])
	} else {
		sum := sha256.Sum256(s.buf)
		s.sum = append(s.sum[:0], sum[:]...)
	}
	s.buf = append(s.buf[:0], prefix...)
	s.buf = hex.AppendEncode(s.buf, s.sum)
	if closeTag {
		s.buf = append(s.buf, '}')
	}
	key := string(s.buf)
	k.pool.Put(s)
	return key, nil
}
