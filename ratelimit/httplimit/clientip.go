package httplimit

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// ErrNoIdentity reports that a request carries no usable identity: an empty
// API-key header, a socket address that is not an IP address, or a proxy
// header whose client entry is missing, "unknown", obfuscated or malformed.
// The Middleware hands it to its error handler (by default a 400 response).
var ErrNoIdentity = errors.New("ratelimit: no identity in request")

// Defaults of ClientIP.
const (
	// DefaultIPv4Prefix is the prefix length IPv4 clients are grouped by:
	// each address is its own client.
	DefaultIPv4Prefix = 32
	// DefaultIPv6Prefix is the prefix length IPv6 clients are grouped by. A
	// subscriber usually holds at least a /64 and can rotate freely inside
	// it (SLAAC privacy addresses), so keying on /128 would be a bypass.
	DefaultIPv6Prefix = 64
)

// ClientIP finds the address of the client that sent a request, and keys a
// limit on it.
//
// By default it trusts nothing but the socket: the client is r.RemoteAddr,
// and headers such as X-Forwarded-For are ignored, because any client can
// send them. Behind reverse proxies, configure which proxies to trust:
//
//   - TrustProxies(cidrs...): the client is the rightmost address of the
//     proxy header that is not a trusted proxy. The socket peer must itself
//     be trusted for the header to be read at all.
//   - TrustHops(n): exactly n proxies, each appending to the header, stand
//     in front of the service, and it cannot be reached around them. The
//     client is the n-th address from the right of the header: the
//     (n+1)-th of the chain made of the header's addresses followed by the
//     socket peer (the nearest proxy).
//
// The leftmost X-Forwarded-For address is never trusted: it is whatever
// the client wrote. The header is X-Forwarded-For unless ProxyHeader names
// another one, such as RFC 7239 Forwarded; exactly one header is read, all
// of its lines in order.
//
// Addresses are normalised: IPv4-mapped IPv6 addresses become IPv4, zones
// are dropped, and IPv6 addresses are grouped by their /64 (see
// IPv6Prefix), so that one subscriber cannot multiply its limit by
// rotating through its own addresses.
//
// A ClientIP is immutable and safe for concurrent use. The zero value is not
// usable; create one with NewClientIP.
type ClientIP struct {
	header    string // canonical header name; "" until trust is configured
	forwarded bool   // header is RFC 7239 Forwarded
	trusted   []netip.Prefix
	hops      int
	v4bits    int
	v6bits    int
}

// IPOption configures a ClientIP.
type IPOption interface {
	applyIP(*ipConfig) error
}

type ipConfig struct {
	header    string
	trusted   []netip.Prefix
	hops      int
	v4bits    int
	v6bits    int
	trustSeen bool
}

type ipOptionFunc func(*ipConfig) error

func (f ipOptionFunc) applyIP(c *ipConfig) error { return f(c) }

// TrustProxies trusts the proxies at the given addresses or CIDR ranges
// ("10.0.0.0/8", "192.0.2.7", "2001:db8::/32"). The proxy header is read
// only when the socket peer is one of them, and the client is the rightmost
// address in the header outside them. When every address is trusted (a
// request from inside the proxies' network), the leftmost one is the
// client. It cannot be combined with TrustHops; calling it again adds
// ranges.
func TrustProxies(addrsOrCIDRs ...string) IPOption {
	return ipOptionFunc(func(c *ipConfig) error {
		for _, s := range addrsOrCIDRs {
			p, err := parseTrusted(s)
			if err != nil {
				return err
			}
			c.trusted = append(c.trusted, p)
		}
		c.trustSeen = true
		return nil
	})
}

// TrustHops trusts the n proxies nearest to the service (n >= 1), each of
// which appends the address it received the request from to the proxy
// header. Use it only when the service is reachable through those proxies
// alone: a client that connects directly can write the header itself. A
// request whose chain is shorter than n+1 addresses has no identity
// (ErrNoIdentity). It cannot be combined with TrustProxies.
func TrustHops(n int) IPOption {
	return ipOptionFunc(func(c *ipConfig) error {
		if n < 1 {
			return fmt.Errorf("%w: httplimit: trusted hops %d must be >= 1", ratelimit.ErrInvalidOption, n)
		}
		c.hops = n
		return nil
	})
}

// ProxyHeader names the one header the trusted proxies write the client
// chain to: "X-Forwarded-For" (the default), "Forwarded" (RFC 7239, whose
// for= parameters are read; quoted, bracketed IPv6 and ports are
// understood, and "unknown" or obfuscated identifiers are no address), or a
// header of your edge that it overwrites, such as "X-Real-IP". Headers are
// never chained: a second header is a second way to spoof.
func ProxyHeader(name string) IPOption {
	return ipOptionFunc(func(c *ipConfig) error {
		if name == "" || strings.ContainsAny(name, " \t\r\n:") {
			return fmt.Errorf("%w: httplimit: bad proxy header name %q", ratelimit.ErrInvalidOption, name)
		}
		c.header = http.CanonicalHeaderKey(name)
		return nil
	})
}

// IPv4Prefix groups IPv4 clients by their first bits bits (default 32:
// one client per address). 24 would put a /24 behind one limit.
func IPv4Prefix(bits int) IPOption {
	return ipOptionFunc(func(c *ipConfig) error {
		if bits < 1 || bits > 32 {
			return fmt.Errorf("%w: httplimit: IPv4 prefix /%d must be 1 to 32", ratelimit.ErrInvalidOption, bits)
		}
		c.v4bits = bits
		return nil
	})
}

// IPv6Prefix groups IPv6 clients by their first bits bits (default 64).
// 56 or 48 group whole sites, 128 keys every address apart (not
// recommended: a /64 holds 2^64 addresses to rotate through).
func IPv6Prefix(bits int) IPOption {
	return ipOptionFunc(func(c *ipConfig) error {
		if bits < 1 || bits > 128 {
			return fmt.Errorf("%w: httplimit: IPv6 prefix /%d must be 1 to 128", ratelimit.ErrInvalidOption, bits)
		}
		c.v6bits = bits
		return nil
	})
}

// NewClientIP returns a ClientIP configured by opts. Bad options give an
// error wrapping ratelimit.ErrInvalidOption.
func NewClientIP(opts ...IPOption) (*ClientIP, error) {
	cfg := ipConfig{header: "X-Forwarded-For", v4bits: DefaultIPv4Prefix, v6bits: DefaultIPv6Prefix}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.applyIP(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.trustSeen && cfg.hops > 0 {
		return nil, fmt.Errorf("%w: httplimit: TrustProxies and TrustHops exclude each other", ratelimit.ErrInvalidOption)
	}
	if cfg.trustSeen && len(cfg.trusted) == 0 {
		return nil, fmt.Errorf("%w: httplimit: TrustProxies needs at least one address or range", ratelimit.ErrInvalidOption)
	}
	c := &ClientIP{trusted: cfg.trusted, hops: cfg.hops, v4bits: cfg.v4bits, v6bits: cfg.v6bits}
	if cfg.trustSeen || cfg.hops > 0 {
		c.header = cfg.header
		c.forwarded = cfg.header == "Forwarded"
	}
	return c, nil
}

// MustClientIP is like NewClientIP but panics on a bad option; for package
// level variables.
func MustClientIP(opts ...IPOption) *ClientIP {
	c, err := NewClientIP(opts...)
	if err != nil {
		panic(err)
	}
	return c
}

// defaultClientIP trusts the socket only.
var defaultClientIP = MustClientIP()

// Addr returns the client's address, normalised (unmapped, without zone)
// but not grouped. The error wraps ErrNoIdentity.
func (c *ClientIP) Addr(r *http.Request) (netip.Addr, error) {
	peer, err := peerAddr(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, err
	}
	if c.header == "" {
		return peer, nil
	}
	return c.resolve(peer, r.Header.Values(c.header))
}

// Prefix returns the client's address masked to its group: a /32 for
// IPv4 and a /64 for IPv6 by default.
func (c *ClientIP) Prefix(r *http.Request) (netip.Prefix, error) {
	a, err := c.Addr(r)
	if err != nil {
		return netip.Prefix{}, err
	}
	return c.group(a), nil
}

// Key is a KeyFunc: the identity "ip:" followed by the client's group,
// such as "ip:192.0.2.1/32" or "ip:2001:db8:1:2::/64".
func (c *ClientIP) Key(r *http.Request) (string, error) {
	p, err := c.Prefix(r)
	if err != nil {
		return "", err
	}
	var buf [64]byte // "ip:" and the longest IPv6 prefix fit
	return string(p.AppendTo(append(buf[:0], "ip:"...))), nil
}

func (c *ClientIP) group(a netip.Addr) netip.Prefix {
	bits := c.v6bits
	if a.Is4() {
		bits = c.v4bits
	}
	p, _ := a.Prefix(bits) // a is valid and zoneless, bits in range
	return p
}

func (c *ClientIP) isTrusted(a netip.Addr) bool {
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// resolve picks the client from the chain: the header's entries, in order,
// then the socket peer. The chain is read from the right, and no further
// than needed: what lies left of the client is the client's own writing,
// and cannot change the result, even when it is malformed.
func (c *ClientIP) resolve(peer netip.Addr, lines []string) (netip.Addr, error) {
	if c.hops == 0 && !c.isTrusted(peer) {
		return peer, nil // an untrusted peer's headers are its own words
	}
	var (
		found  netip.Addr
		last   = peer // the leftmost trusted address seen so far
		pos    int    // entries visited, from the right
		badErr error
	)
	err := c.walk(lines, func(entry string) bool {
		pos++
		if c.hops > 0 && pos < c.hops {
			return true
		}
		a, ok := parseNode(entry)
		if !ok {
			badErr = fmt.Errorf("%w: %s entry %d from the right is not an IP address", ErrNoIdentity, c.header, pos)
			return false
		}
		if c.hops > 0 || !c.isTrusted(a) {
			found = a
			return false
		}
		last = a
		return true
	})
	switch {
	case err != nil:
		return netip.Addr{}, err
	case badErr != nil:
		return netip.Addr{}, badErr
	case found.IsValid():
		return found, nil
	case c.hops > 0:
		return netip.Addr{}, fmt.Errorf("%w: %s has %d entries, fewer than the %d trusted hops", ErrNoIdentity, c.header, pos, c.hops)
	}
	return last, nil // every address is trusted: the request began inside
}

// walk calls visit with the entries of the proxy header from the right
// (the last entry of the last line first) until visit returns false. For
// Forwarded, an entry is the for= value of one forwarded-element ("" when
// it has none); each line is parsed only when reached. Empty entries are
// skipped.
func (c *ClientIP) walk(lines []string, visit func(entry string) bool) error {
	var buf []string
	for l := len(lines) - 1; l >= 0; l-- {
		line := lines[l]
		if c.forwarded {
			var err error
			if buf, err = parseForwarded(line, buf[:0]); err != nil {
				return err
			}
			for i := len(buf) - 1; i >= 0; i-- {
				if !visit(buf[i]) {
					return nil
				}
			}
			continue
		}
		for line != "" {
			item := line
			if i := strings.LastIndexByte(line, ','); i >= 0 {
				item, line = line[i+1:], line[:i]
			} else {
				line = ""
			}
			if item = strings.TrimSpace(item); item != "" && !visit(item) {
				return nil
			}
		}
	}
	return nil
}

// peerAddr parses r.RemoteAddr ("ip:port", or a bare IP as some servers and
// tests set it).
func peerAddr(remote string) (netip.Addr, error) {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return normalize(ap.Addr()), nil
	}
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h // "[fe80::1%eth0]:80" fails ParseAddrPort in some forms
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return normalize(a), nil
	}
	return netip.Addr{}, fmt.Errorf("%w: the socket address is not an IP address", ErrNoIdentity)
}

func normalize(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// parseNode parses one chain entry: "192.0.2.1", "192.0.2.1:8080",
// "2001:db8::1", "[2001:db8::1]", "[2001:db8::1]:8080", with an optional
// IPv6 zone. "unknown", obfuscated identifiers ("_hidden") and anything
// else are not addresses.
func parseNode(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Addr{}, false
	}
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 || !validPort(s[end+1:], true) {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(s[1:end])
		if err != nil || !a.Is6() {
			return netip.Addr{}, false
		}
		return normalize(a), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return normalize(a), true
	}
	// IPv4 with a port: exactly one colon.
	if i := strings.IndexByte(s, ':'); i > 0 && strings.Count(s, ":") == 1 && validPort(s[i:], false) {
		if a, err := netip.ParseAddr(s[:i]); err == nil && a.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// validPort accepts ":" followed by 1 to 5 digits (a port; RFC 7239 also
// allows an obfuscated "_port"), or "" when optional.
func validPort(s string, optional bool) bool {
	if s == "" {
		return optional
	}
	if s[0] != ':' || len(s) < 2 {
		return false
	}
	p := s[1:]
	if p[0] == '_' {
		return len(p) > 1 && isTokenLike(p[1:])
	}
	if len(p) > 5 {
		return false
	}
	_, err := strconv.ParseUint(p, 10, 16)
	return err == nil
}

func isTokenLike(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '.' || b == '_' || b == '-') {
			return false
		}
	}
	return true
}

// parseTrusted parses an address or a CIDR range, unmapping IPv4-mapped
// forms so that they match the normalised addresses.
func parseTrusted(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%w: httplimit: trusted proxy range %q: %v", ratelimit.ErrInvalidOption, s, err)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: httplimit: trusted proxy address %q: %v", ratelimit.ErrInvalidOption, s, err)
	}
	a = normalize(a)
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parseForwarded appends the for= value of each forwarded-element of one
// RFC 7239 Forwarded field line to out ("" for an element without one).
// Values may be tokens or quoted strings; whitespace around ',' and ';' is
// tolerated. A malformed line is an error wrapping ErrNoIdentity: a client
// can only break the parsing of its own request that way, and each proxy
// that adds a line of its own is parsed apart.
func parseForwarded(line string, out []string) ([]string, error) {
	bad := func(what string) ([]string, error) {
		return nil, fmt.Errorf("%w: malformed Forwarded header: %s", ErrNoIdentity, what)
	}
	i, n := 0, len(line)
	skipOWS := func() {
		for i < n && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
	}
	for {
		pairs, forVal, hasFor := 0, "", false
		for {
			skipOWS()
			if i < n && line[i] == ';' {
				i++
				continue
			}
			if i >= n || line[i] == ',' {
				break
			}
			start := i
			for i < n && isTchar(line[i]) {
				i++
			}
			if i == start {
				return bad("expected a parameter name")
			}
			name := line[start:i]
			skipOWS()
			if i >= n || line[i] != '=' {
				return bad("expected '=' after " + strconv.Quote(name))
			}
			i++
			skipOWS()
			var val string
			if i < n && line[i] == '"' {
				i++
				var b strings.Builder
				closed := false
				for i < n {
					ch := line[i]
					if ch == '\\' && i+1 < n {
						b.WriteByte(line[i+1])
						i += 2
						continue
					}
					i++
					if ch == '"' {
						closed = true
						break
					}
					b.WriteByte(ch)
				}
				if !closed {
					return bad("unterminated quoted string")
				}
				val = b.String()
			} else {
				start = i
				for i < n && isTchar(line[i]) {
					i++
				}
				if i == start {
					return bad("empty value of " + strconv.Quote(name))
				}
				val = line[start:i]
			}
			pairs++
			if strings.EqualFold(name, "for") {
				if hasFor {
					return bad("two for= in one element")
				}
				forVal, hasFor = val, true
			}
			skipOWS()
			if i < n && line[i] != ';' && line[i] != ',' {
				return bad("unexpected character after a value")
			}
		}
		if pairs > 0 {
			out = append(out, forVal)
		}
		if i >= n {
			return out, nil
		}
		i++ // ','
	}
}

// isTchar reports whether b is an RFC 9110 token character.
func isTchar(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
}
