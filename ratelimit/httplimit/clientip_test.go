package httplimit

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"testing"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

func TestClientIP(t *testing.T) {
	proxies := []IPOption{TrustProxies("10.0.0.0/8", "2001:db8:ffff::/48")}
	fwd := []IPOption{TrustProxies("10.0.0.0/8"), ProxyHeader("Forwarded")}
	hops1 := []IPOption{TrustHops(1)}
	hops2 := []IPOption{TrustHops(2)}
	for _, tc := range []struct {
		name   string
		opts   []IPOption
		remote string
		hdr    []string // name, value pairs (repeated names are separate lines)
		want   string   // the Key, or "" for ErrNoIdentity
	}{
		// No trust: the socket only, headers ignored.
		{"socket v4", nil, "192.0.2.1:1234", []string{"X-Forwarded-For", "203.0.113.9"}, "ip:192.0.2.1/32"},
		{"socket v4 no port", nil, "192.0.2.1", nil, "ip:192.0.2.1/32"},
		{"socket v6 /64", nil, "[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:80", nil, "ip:2001:db8:1:2::/64"},
		{"socket v4-mapped", nil, "[::ffff:192.0.2.1]:80", nil, "ip:192.0.2.1/32"},
		{"socket zone", nil, "[fe80::1:2%eth0]:80", nil, "ip:fe80::/64"},
		{"socket not an IP", nil, "@unix", nil, ""},
		{"socket empty", nil, "", nil, ""},
		{"no trust ignores Forwarded", nil, "192.0.2.1:1", []string{"Forwarded", "for=203.0.113.9"}, "ip:192.0.2.1/32"},

		// Trusted CIDRs: rightmost untrusted.
		{"one proxy", proxies, "10.0.0.1:1", []string{"X-Forwarded-For", "203.0.113.9"}, "ip:203.0.113.9/32"},
		{"spoofed left part", proxies, "10.0.0.1:1", []string{"X-Forwarded-For", "1.1.1.1, 203.0.113.9, 10.0.0.2"}, "ip:203.0.113.9/32"},
		{"lines in order", proxies, "10.0.0.1:1", []string{"X-Forwarded-For", "1.1.1.1, 203.0.113.9", "X-Forwarded-For", "10.0.0.2"}, "ip:203.0.113.9/32"},
		{"last line wins", proxies, "10.0.0.1:1", []string{"X-Forwarded-For", "203.0.113.9", "X-Forwarded-For", "198.51.100.7"}, "ip:198.51.100.7/32"},
		{"untrusted peer", proxies, "198.51.100.1:1", []string{"X-Forwarded-For", "203.0.113.9"}, "ip:198.51.100.1/32"},
		{"trusted peer, no header", proxies, "10.0.0.1:1", nil, "ip:10.0.0.1/32"},
		{"all trusted: leftmost", proxies, "10.0.0.1:1", []string{"X-Forwarded-For", "10.0.0.5, 10.0.0.6"}, "ip:10.0.0.5/32"},
		{"garbage from a trusted hop", proxies, "10.0.0.1:1", []string{"X-Forwarded-For", "203.0.113.9, garbage, 10.0.0.2"}, ""},
		{"garbage left of the client", proxies, "10.0.0.1:1", []string{"X-Forwarded-For", "garbage, 203.0.113.9"}, "ip:203.0.113.9/32"},
		{"port", proxies, "10.0.0.1:1", []string{"X-Forwarded-For", "203.0.113.9:4711"}, "ip:203.0.113.9/32"},
		{"bracketed v6 with port", proxies, "10.0.0.1:1", []string{"X-Forwarded-For", "[2001:db8:5:6::1]:4711"}, "ip:2001:db8:5:6::/64"},
		{"bare v6", proxies, "10.0.0.1:1", []string{"X-Forwarded-For", "2001:db8:5:6:7::1"}, "ip:2001:db8:5:6::/64"},
		{"v4-mapped entry", proxies, "10.0.0.1:1", []string{"X-Forwarded-For", "::ffff:203.0.113.9"}, "ip:203.0.113.9/32"},
		{"zoned entry", proxies, "10.0.0.1:1", []string{"X-Forwarded-For", "fe80::9%eth1"}, "ip:fe80::/64"},
		{"empty entries", proxies, "10.0.0.1:1", []string{"X-Forwarded-For", " , ,203.0.113.9 , "}, "ip:203.0.113.9/32"},
		{"v4-mapped peer is trusted", proxies, "[::ffff:10.0.0.1]:1", []string{"X-Forwarded-For", "203.0.113.9"}, "ip:203.0.113.9/32"},
		{"v6 proxy range", proxies, "[2001:db8:ffff::1]:1", []string{"X-Forwarded-For", "203.0.113.9, 2001:db8:ffff:1::2"}, "ip:203.0.113.9/32"},
		{"bad port", proxies, "10.0.0.1:1", []string{"X-Forwarded-For", "203.0.113.9:99999"}, ""},
		{"mapped range", []IPOption{TrustProxies("::ffff:10.0.0.0/104")}, "10.0.0.1:1", []string{"X-Forwarded-For", "203.0.113.9"}, "ip:203.0.113.9/32"},
		{"X-Real-IP from the edge", []IPOption{TrustProxies("10.0.0.0/8"), ProxyHeader("x-real-ip")}, "10.0.0.1:1", []string{"X-Real-IP", "203.0.113.9", "X-Forwarded-For", "1.1.1.1"}, "ip:203.0.113.9/32"},

		// RFC 7239 Forwarded.
		{"fwd basic", fwd, "10.0.0.1:1", []string{"Forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43"}, "ip:192.0.2.60/32"},
		{"fwd list", fwd, "10.0.0.1:1", []string{"Forwarded", "for=192.0.2.43, for=198.51.100.17"}, "ip:198.51.100.17/32"},
		{"fwd quoted v6 port", fwd, "10.0.0.1:1", []string{"Forwarded", `for="[2001:db8:cafe::17]:4711"`}, "ip:2001:db8:cafe::/64"},
		{"fwd quoted v4 port, case", fwd, "10.0.0.1:1", []string{"Forwarded", `For="192.0.2.43:47011";proto=https`}, "ip:192.0.2.43/32"},
		{"fwd spaces", fwd, "10.0.0.1:1", []string{"Forwarded", `for = 192.0.2.43 ; proto=http , for=10.0.0.9`}, "ip:192.0.2.43/32"},
		{"fwd escaped quote", fwd, "10.0.0.1:1", []string{"Forwarded", `for="192.0.2.43";by="a\"b"`}, "ip:192.0.2.43/32"},
		{"fwd unknown", fwd, "10.0.0.1:1", []string{"Forwarded", "for=unknown"}, ""},
		{"fwd obfuscated", fwd, "10.0.0.1:1", []string{"Forwarded", "for=_hidden"}, ""},
		{"fwd obfuscated port", fwd, "10.0.0.1:1", []string{"Forwarded", `for="[2001:db8::1]:_p1"`}, "ip:2001:db8::/64"},
		{"fwd unknown behind trusted", fwd, "10.0.0.1:1", []string{"Forwarded", "for=unknown, for=10.0.0.3"}, ""},
		{"fwd unknown left of client", fwd, "10.0.0.1:1", []string{"Forwarded", "for=unknown, for=192.0.2.43"}, "ip:192.0.2.43/32"},
		{"fwd without for", fwd, "10.0.0.1:1", []string{"Forwarded", "proto=https"}, ""},
		{"fwd unterminated", fwd, "10.0.0.1:1", []string{"Forwarded", `for="192.0.2.43`}, ""},
		{"fwd two for", fwd, "10.0.0.1:1", []string{"Forwarded", "for=192.0.2.1;for=192.0.2.2"}, ""},
		{"fwd unquoted v6", fwd, "10.0.0.1:1", []string{"Forwarded", "for=[2001:db8::1]"}, ""},
		{"fwd malformed client line", fwd, "10.0.0.1:1", []string{"Forwarded", `for="1.1.1.1`, "Forwarded", "for=192.0.2.43"}, "ip:192.0.2.43/32"},
		{"fwd ignores XFF", fwd, "10.0.0.1:1", []string{"X-Forwarded-For", "203.0.113.9"}, "ip:10.0.0.1/32"},

		// Trusted hop count.
		{"hops 1", hops1, "198.51.100.1:1", []string{"X-Forwarded-For", "1.1.1.1, 203.0.113.9"}, "ip:203.0.113.9/32"},
		{"hops 1 no header", hops1, "198.51.100.1:1", nil, ""},
		{"hops 2", hops2, "10.0.0.1:1", []string{"X-Forwarded-For", "1.1.1.1, 203.0.113.9, 10.0.0.2"}, "ip:203.0.113.9/32"},
		{"hops 2 short", hops2, "10.0.0.1:1", []string{"X-Forwarded-For", "203.0.113.9"}, ""},
		{"hops 2 lines", hops2, "10.0.0.1:1", []string{"X-Forwarded-For", "203.0.113.9", "X-Forwarded-For", "10.0.0.2"}, "ip:203.0.113.9/32"},
		{"hops garbage", hops1, "10.0.0.1:1", []string{"X-Forwarded-For", "unknown"}, ""},

		// Grouping.
		{"v6 /48", []IPOption{IPv6Prefix(48)}, "[2001:db8:1:2::1]:1", nil, "ip:2001:db8:1::/48"},
		{"v6 /128", []IPOption{IPv6Prefix(128)}, "[2001:db8:1:2::1]:1", nil, "ip:2001:db8:1:2::1/128"},
		{"v4 /24", []IPOption{IPv4Prefix(24)}, "192.0.2.77:1", nil, "ip:192.0.2.0/24"},
		{"v4-mapped grouped as v4", []IPOption{IPv4Prefix(24)}, "[::ffff:192.0.2.77]:1", nil, "ip:192.0.2.0/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClientIP(tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			r := request(tc.remote, tc.hdr...)
			got, err := c.Key(r)
			if tc.want == "" {
				if !errors.Is(err, ErrNoIdentity) {
					t.Fatalf("Key = %q, %v; want ErrNoIdentity", got, err)
				}
				if !contains(err.Error(), "ratelimit:") {
					t.Errorf("error %q lacks the ratelimit: prefix", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Key = %q, %v; want %q", got, err, tc.want)
			}
			a, err := c.Addr(r)
			if err != nil || a.Zone() != "" || a.Is4In6() {
				t.Errorf("Addr = %v, %v: not normalised", a, err)
			}
		})
	}
}

func TestClientIPOptions(t *testing.T) {
	for _, opts := range [][]IPOption{
		{TrustProxies("10.0.0.0/33")},
		{TrustProxies("not-an-ip")},
		{TrustProxies()},
		{TrustHops(0)},
		{TrustHops(1), TrustProxies("10.0.0.0/8")},
		{IPv4Prefix(0)},
		{IPv4Prefix(33)},
		{IPv6Prefix(129)},
		{ProxyHeader("")},
		{ProxyHeader("X Forwarded")},
	} {
		if _, err := NewClientIP(opts...); !errors.Is(err, ratelimit.ErrInvalidOption) || !contains(err.Error(), "ratelimit:") {
			t.Errorf("NewClientIP(%d options): %v, want ErrInvalidOption", len(opts), err)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("MustClientIP did not panic on a bad option")
		}
	}()
	MustClientIP(TrustHops(-1))
}

func TestKeyFuncs(t *testing.T) {
	key := FirstOf(KeyByHeader("x-api-key"), KeyByIP)
	r := request("192.0.2.1:1", "X-API-Key", "k1")
	if id, err := key(r); err != nil || id != "x-api-key:k1" {
		t.Errorf("with a key: %q, %v", id, err)
	}
	if id, err := key(request("192.0.2.1:1")); err != nil || id != "ip:192.0.2.1/32" {
		t.Errorf("without a key: %q, %v", id, err)
	}
	// An API key that looks like an address is not that address's identity.
	a, _ := key(request("192.0.2.9:1", "X-API-Key", "ip:192.0.2.1/32"))
	b, _ := key(request("192.0.2.1:1"))
	if a == b {
		t.Errorf("an API key can impersonate an address: %q", a)
	}
	if _, err := KeyByHeader("X-API-Key")(request("192.0.2.1:1", "X-API-Key", "  ")); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("blank header: %v", err)
	}
	if _, err := FirstOf()(request("192.0.2.1:1")); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("FirstOf(): %v", err)
	}
	// A KeyFunc's own error stops FirstOf.
	boom := errors.New("boom")
	stop := FirstOf(func(*http.Request) (string, error) { return "", boom }, KeyByIP)
	if _, err := stop(request("192.0.2.1:1")); !errors.Is(err, boom) {
		t.Errorf("FirstOf passed over a hard error: %v", err)
	}
}

// A client talking to the service directly can send any proxy header it
// likes: nothing changes, and rotating the values from one address spends
// one bucket. Checked on miniredis and on real Redis.
func TestSpoofingSharesOneBucket(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			for _, cfg := range []struct {
				name string
				ip   *ClientIP
			}{
				{"default", MustClientIP()},
				{"trusted-cidr", MustClientIP(TrustProxies("10.0.0.0/8"))},
				{"trusted-cidr-forwarded", MustClientIP(TrustProxies("10.0.0.0/8"), ProxyHeader("Forwarded"))},
			} {
				t.Run(cfg.name, func(t *testing.T) {
					lim := newLimiter(t, b.client, ratelimit.PerHour(3), ratelimit.WithNamespace("spoof-"+cfg.name))
					m := mustMiddleware(t, lim, WithKey(cfg.ip.Key))
					next := &okHandler{}
					h := m.Handler(next)
					codes := []int{}
					for i := range 6 {
						spoof := fmt.Sprintf("203.0.113.%d", i+1)
						r := request("198.51.100.1:4000",
							"X-Forwarded-For", spoof,
							"Forwarded", "for="+spoof,
							"X-Real-IP", spoof)
						codes = append(codes, serve(h, r).Code)
					}
					want := []int{200, 200, 200, 429, 429, 429}
					if fmt.Sprint(codes) != fmt.Sprint(want) {
						t.Errorf("codes %v, want %v: the spoofed headers bought extra requests", codes, want)
					}
				})
			}
		})
	}
}

// Behind a trusted proxy, each real client has its own bucket, and what a
// client prepends to X-Forwarded-For does not move it to another one.
func TestTrustedProxyBuckets(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			lim := newLimiter(t, b.client, ratelimit.PerHour(2), ratelimit.WithNamespace("proxied"))
			ip := MustClientIP(TrustProxies("10.0.0.0/8"))
			m := mustMiddleware(t, lim, WithKey(ip.Key))
			h := m.Handler(&okHandler{})
			via := func(xff string) int {
				return serve(h, request("10.0.0.1:5000", "X-Forwarded-For", xff)).Code
			}
			// Client A exhausts its bucket while rotating a spoofed prefix.
			got := []int{via("1.1.1.1, 203.0.113.1"), via("2.2.2.2, 203.0.113.1"), via("3.3.3.3, 203.0.113.1")}
			if fmt.Sprint(got) != "[200 200 429]" {
				t.Errorf("client A: %v, want [200 200 429]", got)
			}
			// Client B, through the same proxy, is not affected.
			if c := via("203.0.113.2"); c != 200 {
				t.Errorf("client B got %d after A was limited", c)
			}
		})
	}
}

func TestPeerAddrForms(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:80":         "192.0.2.1",
		"[2001:db8::1]:80":     "2001:db8::1",
		"[fe80::1%eth0]:80":    "fe80::1",
		"[::ffff:192.0.2.1]:1": "192.0.2.1",
		"2001:db8::1":          "2001:db8::1",
	} {
		got, err := peerAddr(in)
		if err != nil || got != netip.MustParseAddr(want) {
			t.Errorf("peerAddr(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
}

// The limiter sees the grouped identity: two addresses of one /64 are one
// client.
func TestIPv6SubnetSharesBucket(t *testing.T) {
	lim := &stubLimiter{res: ratelimit.Result{Allowed: true, Limit: ratelimit.PerMinute(1)}}
	m := mustMiddleware(t, lim)
	h := m.Handler(&okHandler{})
	serve(h, request("[2001:db8:1:2::1]:1"))
	a := lim.lastCall(t).identity
	serve(h, request("[2001:db8:1:2:ffff:ffff:ffff:ffff]:1"))
	b := lim.lastCall(t).identity
	serve(h, request("[2001:db8:1:3::1]:1"))
	c := lim.lastCall(t).identity
	if a != b || a == c {
		t.Errorf("identities %q %q %q: want the first two equal, the third apart", a, b, c)
	}
}
