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
//   - It runs every script call of the library as a wrapped script (see
//     wrapScript): the library's own source, whose TTLs are recorded and
//     replaced by a long sentinel, followed by a capture of every key, in
//     the same script; the client gets the source's reply alone. An FCALL
//     of the functions library's decision function runs the wrapped
//     library's instead (wrapLibrary), the same text wrapped alike. The
//     scripts compute their TTLs from the test clock, which jumps, so a TTL
//     can be 1 ms of real time: left to Redis, real time would expire keys
//     between two steps (or during go-redis's retry backoff after a lost
//     reply), and PEXPIRE of 1 ms can even delete a key at once when the
//     millisecond ticks while Redis sets it. With the sentinel, keys
//     expire only when the harness deletes them, at their TTL on the test
//     clock.
//   - While armed, it drops the reply to a script call that Redis ran,
//     closing the connection, as replyDropper (replylost_test.go) does; the
//     client saw a plain EVALSHA (or FCALL), so go-redis resends it on a new
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
	byFn    map[string]string // a library function -> its wrapped function
	armed   atomic.Int32
	scripts atomic.Int64 // script calls received from clients (resends included)
	wg      sync.WaitGroup

	mu     sync.Mutex
	events []wireEvent
	conns  map[net.Conn]bool
}

// wireEvent is one script call Redis ran: its reply, the keys when it
// started, and after it every key with the TTL the call gave it: a TTL in
// ms it asked for, ttlNone (the key has no TTL), or ttlUntouched.
type wireEvent struct {
	reply   respValue
	ttls    map[string]int64
	before  map[string]bool
	dropped bool
}

const (
	// sentinelTTL is the TTL (ms) the harness gives every key a script
	// wrote: ten days, which no run comes near in real time.
	sentinelTTL = 10 * 24 * 3600 * 1000
	// untouchedTTL: a PTTL above it is the harness's sentinel.
	untouchedTTL = sentinelTTL / 2
	// The capture's TTL for a key without one, and for a key whose TTL
	// the call left alone.
	ttlNone      = -1
	ttlUntouched = -3
)

// wrapScript returns src run as a function whose redis.call records the
// TTL each PEXPIRE or SET ... PX asks for and sets the sentinel instead,
// followed by the capture. Its reply is {src's reply, {key, TTL, ...} for
// every key after the call, {every key before it}}. A TTL the capture
// finds that the call did not ask for and that is not the sentinel (the
// harness's own tests set one behind the limiter's back) is reported and
// replaced by the sentinel too. Commands that set a TTL some other way
// fail the script: the harness would miss their TTLs.
func wrapScript(src string) string {
	return fmt.Sprintf(`local __redis = redis
local __ttl = {}
local __before = __redis.call('KEYS', '*')
%[2]s
local redis = setmetatable({call = __call}, {__index = __redis})
local __reply = (function()
%[1]s
end)()
%[3]s`, src, wrapCall, wrapCapture)
}

// wrapLibrary returns the functions library lib (lua.Library) with its
// decision function fn renamed as name and wrapped as wrapScript wraps a
// script: the library's text sees a redis whose call records TTLs, and
// the function's reply comes with the capture. A library runs its top
// level at FUNCTION LOAD, where only redis.register_function exists, so
// the stand-in for redis is a table the library's name for redis refers to
// from the start, completed at the first call; the library binds
// redis.call at its first call (bind, in prelude.lua), which gets the
// recording one.
func wrapLibrary(lib, fn, name string) string {
	_, body, _ := strings.Cut(lib, "\n") // the "#!lua name=..." line
	body = strings.Replace(body, "'"+fn+"'", "'"+name+"'", 1)
	return fmt.Sprintf(`#!lua name=ratelimit_differential_test
local __load = redis
local __redis, __ttl
%[2]s
local redis = {}
redis.register_function = function(fname, f)
  __load.register_function(fname, function(keys, args)
    __redis = _G.redis
    if rawget(redis, 'call') == nil then
      redis.call = __call
      setmetatable(redis, {__index = __redis})
    end
    __ttl = {}
    local __before = __redis.call('KEYS', '*')
    local __reply = f(keys, args)
    %[3]s
  end)
end
%[1]s`, body, wrapCall, wrapCapture)
}

// wrapCall is the recording redis.call of wrapScript and wrapLibrary:
// __call, on __redis and __ttl.
var wrapCall = fmt.Sprintf(`local function __call(cmd, ...)
  local args = {...}
  local name = string.upper(cmd)
  if name == 'PEXPIRE' then
    if #args ~= 2 then
      error({err = 'ERR differential test: PEXPIRE with options'})
    end
    __ttl[args[1]] = tonumber(args[2])
    args[2] = %[1]d
  elseif name == 'SET' then
    for i = 3, #args do
      local o = string.upper(tostring(args[i]))
      if o == 'PX' then
        __ttl[args[1]] = tonumber(args[i + 1])
        args[i + 1] = %[1]d
      elseif o == 'EX' or o == 'EXAT' or o == 'PXAT' then
        error({err = 'ERR differential test: SET with ' .. o})
      end
    end
  elseif name == 'EXPIRE' or name == 'PEXPIREAT' or name == 'EXPIREAT' or name == 'SETEX' or
      name == 'PSETEX' or name == 'GETEX' or name == 'PERSIST' or name == 'RESTORE' then
    error({err = 'ERR differential test: ' .. name .. ' is not virtualised'})
  end
  return __redis.call(cmd, unpack(args))
end`, sentinelTTL)

// wrapCapture ends wrapScript and wrapLibrary: every key with its TTL,
// after the call (__reply, __before, __ttl).
var wrapCapture = fmt.Sprintf(`local __out = {}
for _, k in ipairs(__redis.call('KEYS', '*')) do
  local p = __redis.call('PTTL', k)
  __out[#__out + 1] = k
  if p < 0 then
    __out[#__out + 1] = %[3]d
  elseif __ttl[k] then
    __out[#__out + 1] = __ttl[k]
  elseif p < %[2]d then
    __out[#__out + 1] = p
    __redis.call('PEXPIRE', k, %[1]d)
  else
    __out[#__out + 1] = %[4]d
  end
end
return {__reply, __out, __before}`, sentinelTTL, untouchedTTL, ttlNone, ttlUntouched)

// newWireProxy starts a proxy to target for the library scripts sources
// and the functions libraries functions (by function name), whose wrapped
// versions are loaded into target's script cache and functions.
func newWireProxy(t testing.TB, target *redis.Client, sources []string, functions map[string]string) *wireProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &wireProxy{ln: ln, target: target.Options().Addr, conns: map[net.Conn]bool{},
		bySHA: map[string]string{}, bySrc: map[string]string{}, byFn: map[string]string{}}
	for fn, lib := range functions {
		wrapped := "differential_test_" + strconv.Itoa(len(p.byFn))
		if err := target.FunctionLoad(context.Background(), wrapLibrary(lib, fn, wrapped)).Err(); err != nil {
			t.Fatalf("FUNCTION LOAD of a wrapped library: %v", err)
		}
		p.byFn[fn] = wrapped
	}
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
		if !wireScriptCall(cmd) {
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
		case "fcall":
			// Function names are case-sensitive.
			body, known = p.byFn[string(cmd.elems[1].str)]
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
		if wrapped.kind != '*' || len(wrapped.elems) != 3 {
			// An error of the script itself, or of Redis: as it is.
			if _, err := client.Write(wrapped.appendTo(nil)); err != nil {
				return
			}
			continue
		}
		reply := wrapped.elems[0]
		ev := wireEvent{reply: reply, ttls: map[string]int64{}, before: map[string]bool{}}
		for i := 0; i+1 < len(wrapped.elems[1].elems); i += 2 {
			ev.ttls[string(wrapped.elems[1].elems[i].str)] = wrapped.elems[1].elems[i+1].num
		}
		for _, k := range wrapped.elems[2].elems {
			ev.before[string(k.str)] = true
		}
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

func wireScriptCall(cmd respValue) bool {
	if cmd.kind != '*' || len(cmd.elems) == 0 {
		return false
	}
	name := bytes.ToLower(cmd.elems[0].str)
	return bytes.Equal(name, []byte("evalsha")) || bytes.Equal(name, []byte("eval")) || bytes.Equal(name, []byte("fcall"))
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
