package e2e

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faultMode is what the proxy does with connections.
type faultMode int32

const (
	// pass forwards both ways.
	pass faultMode = iota
	// stall accepts connections and swallows what clients send, answering
	// nothing: Redis calls time out (a hung or overloaded Redis).
	stall
	// reset closes every connection at once: Redis calls fail with
	// connection errors (Redis down or restarting).
	reset
)

func (m faultMode) String() string {
	return [...]string{"pass", "stall", "reset"}[m]
}

// faultProxy is a TCP proxy in front of Redis that can simulate an outage.
// Every connection is closed when the mode changes, so that no client is
// left with a half-answered command.
type faultProxy struct {
	ln     net.Listener
	target string
	mode   atomic.Int32
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) addr() string { return p.ln.Addr().String() }

// set switches the mode and drops every open connection.
func (p *faultProxy) set(m faultMode) {
	p.mode.Store(int32(m))
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

func (p *faultProxy) close() {
	p.ln.Close()
	p.set(reset)
	p.wg.Wait()
}

func (p *faultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *faultProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

func (p *faultProxy) serve(c net.Conn) {
	if !p.track(c) {
		c.Close()
		return
	}
	defer p.untrack(c)
	switch faultMode(p.mode.Load()) {
	case reset:
		return
	case stall:
		_, _ = io.Copy(io.Discard, c) // until the client or set closes it
		return
	}
	up, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); up.Close(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); c.Close(); done <- struct{}{} }()
	<-done
	<-done
}

// TestFaultProxy checks the three modes against a line echo server.
func TestFaultProxy(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	p := startProxy(t, echo.Addr().String())

	roundTrip := func() error {
		c, err := net.DialTimeout("tcp", p.addr(), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && line != "ping\n" {
			return errors.New("echo: " + line)
		}
		return err
	}

	if err := roundTrip(); err != nil {
		t.Fatalf("pass: %v", err)
	}
	p.set(stall)
	if err := roundTrip(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("stall: %v, want a timeout", err)
	}
	p.set(reset)
	if err := roundTrip(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("reset: %v, want a connection error", err)
	}
	p.set(pass)
	if err := roundTrip(); err != nil {
		t.Errorf("pass again: %v", err)
	}
}
