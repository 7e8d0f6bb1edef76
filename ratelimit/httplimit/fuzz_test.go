package httplimit

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// FuzzXForwardedFor checks the chain resolver on arbitrary X-Forwarded-For
// lines: it never panics, returns a normalised address or ErrNoIdentity,
// ignores the header of an untrusted peer, and is not moved by whatever a
// client prepends once it has found an untrusted client address. The seed
// corpus is in testdata/fuzz/FuzzXForwardedFor.
func FuzzXForwardedFor(f *testing.F) {
	for _, s := range [][2]string{
		{"203.0.113.9", ""},
		{"1.1.1.1, 203.0.113.9", "10.0.0.2"},
		{"[2001:db8::1]:80, 10.0.0.3", ""},
		{"::ffff:203.0.113.9", "fe80::1%eth0"},
		{", ,", "garbage"},
		{"203.0.113.9:99999", "10.0.0.1"},
	} {
		f.Add(s[0], s[1])
	}
	cidr := MustClientIP(TrustProxies("10.0.0.0/8", "fe80::/10"))
	hops := MustClientIP(TrustHops(2))
	f.Fuzz(func(t *testing.T, line1, line2 string) {
		checkResolver(t, cidr, []string{line1, line2})
		checkResolver(t, hops, []string{line1, line2})
	})
}

// FuzzForwarded is FuzzXForwardedFor for RFC 7239 Forwarded lines.
func FuzzForwarded(f *testing.F) {
	for _, s := range [][2]string{
		{"for=192.0.2.60;proto=http;by=203.0.113.43", ""},
		{"for=192.0.2.43, for=198.51.100.17", "for=10.0.0.2"},
		{`for="[2001:db8:cafe::17]:4711"`, ""},
		{"for=unknown", "for=_hidden"},
		{`for="unterminated`, "for=192.0.2.1"},
		{`for = 192.0.2.43 ; proto=http , for=10.0.0.9`, `by="a\"b"`},
	} {
		f.Add(s[0], s[1])
	}
	cidr := MustClientIP(TrustProxies("10.0.0.0/8"), ProxyHeader("Forwarded"))
	hops := MustClientIP(TrustHops(1), ProxyHeader("Forwarded"))
	f.Fuzz(func(t *testing.T, line1, line2 string) {
		checkResolver(t, cidr, []string{line1, line2})
		checkResolver(t, hops, []string{line1, line2})
	})
}

func checkResolver(t *testing.T, c *ClientIP, lines []string) {
	trustedPeer := netip.MustParseAddr("10.0.0.1")
	a, err := c.resolve(trustedPeer, lines)
	if err != nil {
		if !errors.Is(err, ErrNoIdentity) {
			t.Fatalf("resolve(%q): error %v does not wrap ErrNoIdentity", lines, err)
		}
	} else {
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
			t.Fatalf("resolve(%q) = %v: not a normalised address", lines, a)
		}
		if c.hops == 0 && !c.isTrusted(a) {
			// Whatever the client writes in front cannot move the result.
			spoofed := append([]string{"for=\"unterminated, 203.0.113.66, [::1]:1"}, lines...)
			if b, err := c.resolve(trustedPeer, spoofed); err != nil || b != a {
				t.Fatalf("a prepended line moved the client from %v to %v (%v)", a, b, err)
			}
		}
		if p := c.group(a); !p.Contains(a) {
			t.Fatalf("group %v does not contain %v", p, a)
		}
	}
	if c.hops == 0 {
		untrusted := netip.MustParseAddr("198.51.100.1")
		if b, err := c.resolve(untrusted, lines); err != nil || b != untrusted {
			t.Fatalf("an untrusted peer's header was read: %v, %v", b, err)
		}
	}
}

// FuzzForwardedQuoting round-trips values through quoted-string syntax:
// what a proxy quotes, the parser reads back unchanged.
func FuzzForwardedQuoting(f *testing.F) {
	f.Add("[2001:db8::1]:80", "192.0.2.1")
	f.Add(`a"b\c`, "")
	f.Add("_hidden", "unknown")
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, s := range []string{a, b} {
			for i := 0; i < len(s); i++ {
				if s[i] < 0x20 || s[i] > 0x7e {
					return // quoted-string holds visible ASCII (obs-text aside)
				}
			}
		}
		q := func(s string) string {
			return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
		}
		line := "for=" + q(a) + ";proto=https, by=x;for=" + q(b)
		got, err := parseForwarded(line, nil)
		if err != nil {
			t.Fatalf("parseForwarded(%q): %v", line, err)
		}
		if len(got) != 2 || got[0] != a || got[1] != b {
			t.Fatalf("parseForwarded(%q) = %s, want [%q %q]", line, strconv.Quote(strings.Join(got, "|")), a, b)
		}
	})
}
