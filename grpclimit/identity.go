package grpclimit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// ErrNoIdentity reports a call that carries no usable identity: a missing
// or empty metadata entry, or a peer that has no IP address (a Unix
// socket, an in-memory connection). The Interceptor answers it with
// codes.InvalidArgument.
var ErrNoIdentity = errors.New("ratelimit: no identity in call")

// KeyFunc returns the identity a call is limited as, from its context:
// the peer, incoming metadata, or what an authentication interceptor put
// there. The identity is hashed by the limiter and never logged.
//
// An error (for a missing identity, wrap ErrNoIdentity) answers the call
// with codes.InvalidArgument and its message, so the message must not
// hold a secret; a status error (status.Error(codes.Unauthenticated, ...))
// is returned as it is.
type KeyFunc func(ctx context.Context) (string, error)

// KeyByPeer is the default KeyFunc: the IP address of the connection's
// peer, without the port, as "ip:" and a prefix: "ip:203.0.113.9/32", with
// IPv6 grouped by /64 ("ip:2001:db8:1:2::/64"), since one subscriber holds
// a whole /64 and could rotate through it. IPv4-mapped addresses count as
// IPv4, and zones are dropped. This is the identity httplimit.KeyByIP
// gives the same client over HTTP.
func KeyByPeer(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "", fmt.Errorf("%w: no peer", ErrNoIdentity)
	}
	var a netip.Addr
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		a, _ = netip.AddrFromSlice(tcp.IP)
	} else if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		a, _ = netip.ParseAddr(host)
	}
	if !a.IsValid() {
		// The address may be a path or a name: not in the message.
		return "", fmt.Errorf("%w: the peer's %s address is not an IP address", ErrNoIdentity, p.Addr.Network())
	}
	a = a.Unmap().WithZone("")
	bits := 64
	if a.Is4() {
		bits = 32
	}
	pfx, _ := a.Prefix(bits) // a is valid and zoneless, bits in range
	var buf [64]byte
	return string(pfx.AppendTo(append(buf[:0], "ip:"...))), nil
}

// KeyByMetadata returns a KeyFunc reading the identity from the incoming
// metadata entry name (its first value), such as an API key in x-api-key.
// The identity is the lower-case name, ':' and the value: the same as
// httplimit.KeyByHeader gives for the HTTP header of that name. A missing
// or empty entry is an error wrapping ErrNoIdentity.
//
// Metadata is whatever the client sent: check the key is valid (in the
// KeyFunc, or in an authentication interceptor before this one), or a
// client can rotate made-up keys to get a fresh limit each time.
func KeyByMetadata(name string) KeyFunc {
	name = strings.ToLower(name)
	prefix := name + ":"
	return func(ctx context.Context) (string, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		var v string
		if vals := md[name]; len(vals) > 0 {
			v = strings.TrimSpace(vals[0])
		}
		if v == "" {
			return "", fmt.Errorf("%w: metadata %s is missing or empty", ErrNoIdentity, name)
		}
		return prefix + v, nil
	}
}

// FirstOf returns a KeyFunc that tries keys in order and returns the first
// identity found: FirstOf(KeyByMetadata("x-api-key"), KeyByPeer) limits
// API clients by key and the others by address. A key returning an error
// wrapping ErrNoIdentity passes to the next one; any other error stops the
// search and is returned.
func FirstOf(keys ...KeyFunc) KeyFunc {
	keys = append([]KeyFunc(nil), keys...)
	return func(ctx context.Context) (string, error) {
		err := fmt.Errorf("%w: no key function", ErrNoIdentity)
		for _, k := range keys {
			var id string
			if id, err = k(ctx); err == nil {
				return id, nil
			}
			if !errors.Is(err, ErrNoIdentity) {
				return "", err
			}
		}
		return "", err
	}
}

// CostFunc returns the cost of a call to fullMethod
// ("/package.Service/Method"): 1 per call, a size, the tokens a request
// asks for. req is the request message of a unary call, and nil for a
// stream (decided once, when it opens). An error answers the call with
// codes.InvalidArgument (or its own status); a cost above the limit's
// burst could never be allowed and is answered the same way.
type CostFunc func(ctx context.Context, fullMethod string, req any) (int64, error)
