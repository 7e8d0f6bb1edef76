package ratelimit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// wireProxy stands between the limiter's go-redis client and the
// redis-server of the differential test, and does two things there:
//
//   - It runs every script call of the library as a wrapped script: the
//     library's own source run as a function, followed by the harness's
//     capture in the same script, and answers the client with the
//     function's reply alone. The capture reads the TTL of every key
//     (PTTL) and replaces each TTL the call just set by a long sentinel.
//     The scripts compute their TTLs from the test clock, which jumps, so a
//     TTL can be 1 ms of real time: without this, real time would expire
//     keys between the call and any later look at them (and during
//     go-redis's retry backoff after a lost reply). It has to be the same
//     script: Redis freezes the clock of expiry for one script, not for a
//     MULTI, and a loaded machine can pause Redis for milliseconds between
//     two scripts. With it, keys expire only when the harness deletes them,
//     at their TTL on the test clock.
//   - While armed, it drops the reply to a script call that Redis ran,
//     closing the connection, as replyDropper (replylost_test.go) does; the
//     client saw a plain EVALSHA, so go-redis resends it on a new
//     connection exactly as it would against Redis. Unlike replyDropper it
//     frames the RESP stream, so it drops only a reply Redis produced by
//     running the script (never a NOSCRIPT error, never half a reply), and
//     it records the dropped reply: the ledger of admissions needs to know
//     what the hidden first run decided.
//
// A script it does not know is answered with an error: the harness would
// be blind to its TTLs. It serves one command at a time per connection (the
// limiters of the test run with pipelining off, and go-redis waits for each
// reply).
type wireProxy struct {
	ln      net.Listener
	target  string
	bySHA   map[string]string // SHA-1 of a library script -> SHA-1 of its wrapped source
	bySrc   map[string]string // a library script's source -> its wrapped source
	armed   atomic.Int32
	scripts atomic.Int64 // script calls received from clients (resends included)
	wg      sync.WaitGroup

	mu     sync.Mutex
	events []wireEvent
	conns  map[net.Conn]bool
}

// wireEvent is one script call Redis ran: its reply, and the keys with their
// PTTL right after it (ms; -1 for a key without TTL).
//
// A PTTL counts from the moment it is read, and real time may pass between
// the script setting a TTL and the capture reading it (a loaded machine can
// deschedule Redis): the TTL the script set lies in [PTTL, PTTL+slack],
// slack being the whole ms between TIME before the call and TIME after the
// capture.
type wireEvent struct {
	reply   respValue
	ttls    map[string]int64
	slack   int64           // ms
	before  map[string]bool // the keys when the script started
	dropped bool
}

const (
	// sentinelTTL is the TTL (ms) the harness gives every key a script
	// wrote: ten days, which no run comes near in real time.
	sentinelTTL = 10 * 24 * 3600 * 1000
	// untouchedTTL: a PTTL above it is still the harness's sentinel, so
	// the call did not set that key's TTL.
	untouchedTTL = sentinelTTL / 2
)

// wrapScript returns src run as a function, then the capture: every key's
// PTTL, the sentinel in place of any TTL the call set, and Redis's TIME in
// µs before the call and after the capture. Its reply is {src's reply,
// {key, PTTL, ..., time after}, time before, the keys before}.
func wrapScript(src string) string {
	return fmt.Sprintf(`local __t = redis.call('TIME')
local __t0 = tonumber(__t[1]) * 1000000 + tonumber(__t[2])
local __keys = redis.call('KEYS', '*')
local __reply = (function()
%s
end)()
local __out = {}
for _, k in ipairs(redis.call('KEYS', '*')) do
  local ttl = redis.call('PTTL', k)
  __out[#__out + 1] = k
  __out[#__out + 1] = ttl
  if ttl >= 0 and ttl < %d then
    redis.call('PEXPIRE', k, %d)
  end
end
__t = redis.call('TIME')
__out[#__out + 1] = tonumber(__t[1]) * 1000000 + tonumber(__t[2])
return {__reply, __out, __t0, __keys}`, src, untouchedTTL, sentinelTTL)
}

// newWireProxy starts a proxy to target for the library scripts sources,
// whose wrapped versions are loaded into target's script cache.
func newWireProxy(t testing.TB, target *redis.Client, sources []string) *wireProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &wireProxy{ln: ln, target: target.Options().Addr, conns: map[net.Conn]bool{},
		bySHA: map[string]string{}, bySrc: map[string]string{}}
	for _, src := range sources {
		wrapped := wrapScript(src)
		sha, err := target.ScriptLoad(context.Background(), wrapped).Result()
		if err != nil {
			t.Fatalf("SCRIPT LOAD of a wrapped script: %v", err)
		}
		p.bySHA[redis.NewScript(src).Hash()] = sha
		p.bySrc[src] = wrapped
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *wireProxy) addr() string { return p.ln.Addr().String() }

// take returns the events since the last take.
func (p *wireProxy) take() []wireEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	ev := p.events
	p.events = nil
	return ev
}

func (p *wireProxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

func (p *wireProxy) serve(client net.Conn) {
	p.track(client, true)
	defer p.track(client, false)
	defer client.Close()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.track(server, true)
	defer p.track(server, false)
	defer server.Close()
	cr, sr := bufio.NewReader(client), bufio.NewReader(server)
	for {
		cmd, err := readResp(cr)
		if err != nil {
			return
		}
		if !isScriptCall(cmd) {
			if _, err := server.Write(cmd.appendTo(nil)); err != nil {
				return
			}
			reply, err := readResp(sr)
			if err != nil {
				return
			}
			if _, err := client.Write(reply.appendTo(nil)); err != nil {
				return
			}
			continue
		}
		p.scripts.Add(1)
		// The same call, of the wrapped script.
		body, known := "", false
		switch strings.ToLower(string(cmd.elems[0].str)) {
		case "evalsha":
			body, known = p.bySHA[strings.ToLower(string(cmd.elems[1].str))]
		case "eval":
			body, known = p.bySrc[string(cmd.elems[1].str)]
		}
		if !known {
			if _, err := client.Write([]byte("-ERR wireProxy: a script the differential test does not know: add it to diffScripts\r\n")); err != nil {
				return
			}
			continue
		}
		call := respValue{kind: '*', elems: append([]respValue(nil), cmd.elems...)}
		call.elems[1] = respValue{kind: '$', str: []byte(body)}
		if _, err := server.Write(call.appendTo(nil)); err != nil {
			return
		}
		wrapped, err := readResp(sr)
		if err != nil {
			return
		}
		if wrapped.kind != '*' || len(wrapped.elems) != 4 {
			// An error of the script itself, or of Redis: as it is.
			if _, err := client.Write(wrapped.appendTo(nil)); err != nil {
				return
			}
			continue
		}
		reply := wrapped.elems[0]
		ev := wireEvent{reply: reply, before: map[string]bool{}}
		for _, k := range wrapped.elems[3].elems {
			ev.before[string(k.str)] = true
		}
		ev.ttls, ev.slack = captureTTLs(wrapped.elems[1], wrapped.elems[2].num)
		// Drop only a reply the script produced by running: an array.
		if reply.kind == '*' && p.disarm() {
			ev.dropped = true
		}
		p.mu.Lock()
		p.events = append(p.events, ev)
		p.mu.Unlock()
		if ev.dropped {
			return // closes both connections: Redis ran it, the client never hears
		}
		if _, err := client.Write(reply.appendTo(nil)); err != nil {
			return
		}
	}
}

func (p *wireProxy) disarm() bool {
	for range 4 { // bounded: a concurrent arm can only raise it
		left := p.armed.Load()
		if left <= 0 {
			return false
		}
		if p.armed.CompareAndSwap(left, left-1) {
			return true
		}
	}
	return false
}

func isScriptCall(cmd respValue) bool {
	if cmd.kind != '*' || len(cmd.elems) == 0 {
		return false
	}
	name := bytes.ToLower(cmd.elems[0].str)
	return bytes.Equal(name, []byte("evalsha")) || bytes.Equal(name, []byte("eval"))
}

// captureTTLs decodes the capture's reply, and the slack of its PTTLs from
// Redis's time before the call (µs).
func captureTTLs(v respValue, before int64) (map[string]int64, int64) {
	out := map[string]int64{}
	n := len(v.elems) - 1
	if n < 0 {
		return out, 0
	}
	for i := 0; i+1 < n; i += 2 {
		out[string(v.elems[i].str)] = v.elems[i+1].num
	}
	return out, v.elems[n].num/1000 - before/1000
}

// respValue is one RESP2 value.
type respValue struct {
	kind  byte // '+', '-', ':', '$', '*'
	str   []byte
	num   int64
	null  bool
	elems []respValue
}

// ints returns an all-integer array reply as integers.
func (v respValue) ints() ([]int64, error) {
	if v.kind != '*' {
		return nil, fmt.Errorf("reply of kind %q, want an array", v.kind)
	}
	out := make([]int64, len(v.elems))
	for i, e := range v.elems {
		if e.kind != ':' {
			return nil, fmt.Errorf("element %d of kind %q, want an integer", i, e.kind)
		}
		out[i] = e.num
	}
	return out, nil
}

func respCommand(args ...string) []byte {
	b := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b = append(b, "$"+strconv.Itoa(len(a))+"\r\n"+a+"\r\n"...)
	}
	return b
}

// maxRespLen bounds what the parser accepts, so that a corrupt stream
// fails instead of allocating without end.
const maxRespLen = 1 << 24

func readResp(r *bufio.Reader) (respValue, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return respValue{}, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return respValue{}, errors.New("resp: malformed line")
	}
	v := respValue{kind: line[0]}
	body := line[1 : len(line)-2]
	switch v.kind {
	case '+', '-':
		v.str = append([]byte(nil), body...)
	case ':':
		v.num, err = strconv.ParseInt(string(body), 10, 64)
	case '$':
		var n int64
		if n, err = strconv.ParseInt(string(body), 10, 64); err != nil {
			break
		}
		if n < 0 {
			v.null = true
			break
		}
		if n > maxRespLen {
			return v, errors.New("resp: bulk too long")
		}
		buf := make([]byte, n+2)
		if _, err = io.ReadFull(r, buf); err != nil {
			break
		}
		v.str = buf[:n]
	case '*':
		var n int64
		if n, err = strconv.ParseInt(string(body), 10, 64); err != nil {
			break
		}
		if n < 0 {
			v.null = true
			break
		}
		if n > maxRespLen {
			return v, errors.New("resp: array too long")
		}
		v.elems = make([]respValue, n)
		for i := range v.elems {
			if v.elems[i], err = readResp(r); err != nil {
				break
			}
		}
	default:
		return v, fmt.Errorf("resp: unknown type %q", v.kind)
	}
	return v, err
}

func (v respValue) appendTo(b []byte) []byte {
	b = append(b, v.kind)
	switch v.kind {
	case '+', '-':
		b = append(b, v.str...)
	case ':':
		b = strconv.AppendInt(b, v.num, 10)
	case '$':
		if v.null {
			return append(b, "-1\r\n"...)
		}
		b = strconv.AppendInt(b, int64(len(v.str)), 10)
		b = append(b, "\r\n"...)
		b = append(b, v.str...)
	case '*':
		if v.null {
			return append(b, "-1\r\n"...)
		}
		b = strconv.AppendInt(b, int64(len(v.elems)), 10)
		b = append(b, "\r\n"...)
		for _, e := range v.elems {
			b = e.appendTo(b)
		}
		return b
	}
	return append(b, "\r\n"...)
}
