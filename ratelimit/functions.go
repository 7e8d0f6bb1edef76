package ratelimit

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/lua"
)

// Decisions go to Redis as FCALL of the functions library (lua.Library,
// Redis 7 or later), not as EVALSHA of decide.lua: Redis runs a script's
// whole text on every call, remaking all its closures and tables, where a
// library's text runs once, at FUNCTION LOAD, and a call runs only the
// function (callgrind, redis-server 7.0, a lone token-bucket Allow: about
// 96,000 instructions instead of 147,000; per decision of a BatchAllow of
// 32, 56,000 instead of 59,000).
//
// Nothing has to be set up: a node that lacks the library (a restart
// without persistence, FUNCTION FLUSH, a new master, a node never used)
// answers "Function not found" before running anything; the engine then
// loads the library on that node (on a Cluster the master of the key's
// slot, on a Ring the key's shard) and sends the call once more. A server
// that cannot run functions (before Redis 7, an embedded stand-in such as
// miniredis, an ACL user without FCALL or FUNCTION LOAD) refuses FCALL
// without running it either, or refuses the library; the engine then
// sends its decisions with EVALSHA for good, silently: both run the same
// decide.lua.
//
// The library and its function carry the version of their text, so
// processes of different versions of this package share a Redis, each
// with its own library; no one replaces another's. The MultiLimiter's and
// the leases' scripts stay EVALSHA scripts.

// decideFunction is the FCALL name of the decision function, boxed once
// (boxing it per call would allocate).
var decideFunction any = lua.DecideFunction()

// useFunctions reports whether e sends decisions with FCALL.
func (e *engine) useFunctions() bool { return !e.scriptsOnly.Load() }

// fcallFate sorts the error of an FCALL of the decision function.
type fcallFate uint8

const (
	// fateOther: the function ran (an invalid argument, WRONGTYPE...) or
	// the call failed otherwise (a timeout): its outcome stands.
	fateOther fcallFate = iota
	// fateMissing: the node has no library: load it, send the call again.
	fateMissing
	// fateUnsupported: the server (or the ACL user) cannot run functions:
	// scripts from now on.
	fateUnsupported
	// fateRefused: refused before running for a reason that EVAL of a
	// script without flags only meets at its first write (OOM, MISCONF,
	// READONLY, NOREPLICAS): this call as a script, so that what does not
	// write (a Peek) is still decided, as before functions.
	fateRefused
)

// fateOf sorts err, an error of an FCALL or a FUNCTION LOAD.
func fateOf(err error) fcallFate {
	var rerr redis.Error
	if err == nil || !errors.As(err, &rerr) {
		return fateOther
	}
	msg := rerr.Error()
	switch {
	case strings.HasPrefix(msg, "ERR Function not found"):
		return fateMissing
	case strings.HasPrefix(msg, "ERR unknown command"):
		// Before Redis 7 (FCALL or FUNCTION unknown), miniredis, or a
		// renamed or disabled command.
		return fateUnsupported
	case strings.HasPrefix(msg, "NOPERM") && (strings.Contains(msg, "'fcall") || strings.Contains(msg, "'function")):
		// An ACL user without +fcall or +function|load; a NOPERM about
		// keys stands (EVALSHA would meet it too).
		return fateUnsupported
	case strings.HasPrefix(msg, "OOM "), strings.HasPrefix(msg, "MISCONF "),
		strings.HasPrefix(msg, "READONLY "), strings.HasPrefix(msg, "NOREPLICAS "):
		return fateRefused
	}
	return fateOther
}

// loadFailed handles a FUNCTION LOAD that failed with lerr, and reports
// whether the call that needed the library goes as a script. A Redis error
// reply other than a refusal that EVAL meets too (OOM...) says that this
// server will not take the library (NOPERM, an unknown command, a sandbox
// that rejects it): scripts for good, rather than three round trips per
// decision. A load that did not reach Redis (a timeout, a broken
// connection) is the call's own error: a script would fare no better.
func (e *engine) loadFailed(lerr error) (asScript bool) {
	var rerr redis.Error
	if !errors.As(lerr, &rerr) {
		return false
	}
	if fateOf(lerr) != fateRefused {
		e.scriptsOnly.Store(true)
	}
	return true
}

// libraryExists reports whether err is FUNCTION LOAD's answer that the
// library is there already (loaded by another call or process meanwhile).
func libraryExists(err error) bool {
	return redis.HasErrorPrefix(err, "Library") && strings.Contains(err.Error(), "already exists")
}

// loadLibrary loads the functions library on the node that serves key,
// and reports the error, nil when the library is there.
func (e *engine) loadLibrary(ctx context.Context, key string) error {
	return e.nodeLoad(ctx, nil, key)
}

// nodeFor returns the client of the node that serves key: on a Cluster the
// master of its slot, on a Ring its shard, else the client itself.
func (e *engine) nodeFor(ctx context.Context, key string) (redis.Cmdable, error) {
	switch c := e.client.(type) {
	case *redis.ClusterClient:
		return c.MasterForKey(ctx, key)
	case *redis.Ring:
		return c.GetShardClientForKey(key)
	}
	return e.client, nil
}

// isFcall reports whether cmd is an FCALL (built by newDecideCmd).
func isFcall(cmd *redis.IntSliceCmd) bool { return cmd.Args()[0] == "fcall" }

// asScript returns cmd, an FCALL of the decision function, as EVALSHA of
// script (decide.lua, which takes the same keys and arguments).
func asScript(ctx context.Context, script *redis.Script, cmd *redis.IntSliceCmd) *redis.IntSliceCmd {
	a := append([]any(nil), cmd.Args()...)
	a[0], a[1] = "evalsha", boxedHash(script)
	return redis.NewIntSliceCmd(ctx, a...)
}

// copyCmd returns a fresh copy of cmd, to send once more.
func copyCmd(ctx context.Context, cmd *redis.IntSliceCmd) *redis.IntSliceCmd {
	return redis.NewIntSliceCmd(ctx, cmd.Args()...)
}

// firstKey returns the first key of a command built by newDecideCmd or
// newScriptCmd (every decision has one).
func firstKey(cmd *redis.IntSliceCmd) string {
	a := cmd.Args()
	if n, _ := a[2].(int); n > 0 {
		if k, ok := a[3].(string); ok {
			return k
		}
	}
	return ""
}

// recoverOne finishes a lone call of script whose command cmd failed with
// err: an FCALL the server did not run is sent again after loading the
// library, or as a script; a script call that met NOSCRIPT is sent as
// EVAL. It returns the call's reply or error.
func (e *engine) recoverOne(ctx context.Context, script *redis.Script, cmd *redis.IntSliceCmd, err error) ([]int64, error) {
	if isFcall(cmd) {
		fate := fateOf(err)
		if fate == fateMissing {
			if lerr := e.loadLibrary(ctx, firstKey(cmd)); lerr != nil {
				if !e.loadFailed(lerr) {
					return nil, lerr
				}
			} else {
				cmd = copyCmd(ctx, cmd)
				_ = e.client.Process(ctx, cmd)
				reply, err := cmd.Result()
				if fate = fateOf(err); err == nil || fate == fateOther {
					return reply, err
				}
			}
		}
		switch fate {
		case fateOther:
			return nil, err
		case fateUnsupported:
			e.scriptsOnly.Store(true)
		}
		// Missing still, or refused: this call as a script.
		cmd = asScript(ctx, script, cmd)
		_ = e.client.Process(ctx, cmd)
		var reply []int64
		if reply, err = cmd.Result(); err == nil {
			return reply, nil
		}
	}
	if !isNoScript(err) {
		return nil, err
	}
	keys, args := splitScriptCmd(cmd)
	return script.Eval(ctx, e.client, keys, args...).Int64Slice()
}

// recoverFunctions finishes the calls of a pipeline that failed as FCALL
// without running: it loads the library on each node that lacked it and
// sends those calls again, in one pipeline. It returns the calls to send
// as scripts instead (the server cannot run functions, refused them, or
// still lacks the library), their commands made EVALSHA; the others have
// their outcome.
func (e *engine) recoverFunctions(ctx context.Context, failed []*scriptCall) []*scriptCall {
	var missing, scripts []*scriptCall
	classify := func(c *scriptCall) {
		switch fateOf(c.err) {
		case fateMissing:
			missing = append(missing, c)
		case fateUnsupported:
			e.scriptsOnly.Store(true)
			scripts = append(scripts, c)
		case fateRefused:
			scripts = append(scripts, c)
		}
	}
	for _, c := range failed {
		classify(c)
	}
	if len(missing) > 0 {
		loaded := map[redis.Cmdable]error{}
		var resend []*scriptCall
		for _, c := range missing {
			if lerr := e.nodeLoad(ctx, loaded, firstKey(c.cmd)); lerr != nil {
				if e.loadFailed(lerr) {
					scripts = append(scripts, c)
				} else {
					c.err = lerr
				}
				continue
			}
			resend = append(resend, c)
		}
		if len(resend) > 0 {
			pipe := e.client.Pipeline()
			for _, c := range resend {
				c.cmd = copyCmd(ctx, c.cmd)
				_ = pipe.Process(ctx, c.cmd)
			}
			_, _ = pipe.Exec(ctx)
			missing = missing[:0]
			for _, c := range resend {
				if c.reply, c.err = c.cmd.Result(); c.err != nil {
					classify(c)
				}
			}
			// Still missing (the slot moved meanwhile): as a script.
			scripts = append(scripts, missing...)
		}
	}
	for _, c := range scripts {
		c.cmd = asScript(ctx, c.script, c.cmd)
	}
	return scripts
}

// nodeLoad loads the library on the node of key (FUNCTION LOAD, without
// REPLACE: a library of the same name holds the same text) and returns the
// error, nil when the library is there. With loaded, a node is loaded once
// per round: on a Cluster a node's client is the same for all its keys.
func (e *engine) nodeLoad(ctx context.Context, loaded map[redis.Cmdable]error, key string) error {
	node, err := e.nodeFor(ctx, key)
	if err != nil {
		return err
	}
	if err, ok := loaded[node]; ok {
		return err
	}
	err = node.FunctionLoad(ctx, lua.Library()).Err()
	if libraryExists(err) {
		err = nil
	}
	if loaded != nil {
		loaded[node] = err
	}
	return err
}
