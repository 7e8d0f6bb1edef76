package ratelimit

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The calls a limiter makes to Redis. A decision (of a Limiter: AllowN,
// Peek, Refund, BatchAllow) is a *decision, run by decide.lua, which takes
// many decisions in one script call: decisions that go to Redis together
// (queued in the dispatcher, or a BatchAllow) share one call per group of
// keys that one script may touch (groupFunc). The MultiLimiter's and the
// leases' calls are a *scriptCall each.
//
// Every call runs within the backend timeout (WithTimeout) or the caller's
// earlier deadline, and through the breaker (WithBreaker). Decisions go as
// FCALL of the functions library where the server has functions (see
// functions.go), else as EVALSHA of decide.lua. EVALSHA falls back to EVAL
// on NOSCRIPT (the script cache is lost on restart, failover and SCRIPT
// FLUSH).

// decision is one decision for decide.lua: its keys and its arguments
// (algorithm, a, b, c, cost, mode, and for a refund the refunded call's
// time and how long to remember the refund), then its reply.
type decision struct {
	keyArr [3]string // room for keys, so that most need no slice of their own
	keys   []string
	args   [8]any
	nargs  int
	now    int64 // the scripts' clock argument (tests only), 0: Redis TIME

	reply [5]int64
	err   error
}

// scriptCall is one call of a script of its own, and its outcome.
type scriptCall struct {
	script *redis.Script
	cmd    *redis.IntSliceCmd
	reply  []int64
	err    error
}

// Script modes (the mode argument of decide.lua and multi.lua).
type mode uint8

const (
	modePeek   mode = 0 // report only
	modeSpend  mode = 1 // spend the cost when allowed
	modeRefund mode = 2 // give the cost back
)

// maxDecide bounds the decisions in one script call: Redis runs a script
// without serving anyone else meanwhile.
const maxDecide = 256

// decide runs d, through the dispatcher or in a round trip of its own.
func (e *engine) decide(ctx context.Context, d *decision) *BackendError {
	return e.guard(ctx, func() *BackendError {
		if e.pipe != nil {
			return e.pipe.do(ctx, d, nil)
		}
		if err := e.roundTrip(ctx, d, nil, nil); err != nil {
			return err
		}
		if d.err != nil {
			return newBackendError(d.err)
		}
		return nil
	})
}

// script runs one call of script, through the dispatcher or in a round trip
// of its own, and returns its all-integer reply.
func (e *engine) script(ctx context.Context, script *redis.Script, keys []string, args ...any) ([]int64, *BackendError) {
	sc := &scriptCall{script: script, cmd: newScriptCmd(ctx, script, keys, args)}
	err := e.guard(ctx, func() *BackendError {
		if e.pipe != nil {
			return e.pipe.do(ctx, nil, sc)
		}
		return e.runAlone(ctx, sc)
	})
	if err != nil {
		return nil, err
	}
	return sc.reply, nil
}

// runDecisions sends ds in one round trip (a pipeline of one script call
// per group), under the backend timeout; each decision gets its reply or
// its error. A non-nil error means the round trip as a whole did not come
// back (the caller's context ended first, or the backend timeout passed for
// a client that ignores deadlines); the decisions are then not to be read.
func (e *engine) runDecisions(ctx context.Context, ds []*decision) *BackendError {
	return e.roundTrip(ctx, nil, ds, nil)
}

// runAlone sends one script call in a round trip of its own.
func (e *engine) runAlone(ctx context.Context, sc *scriptCall) *BackendError {
	if err := e.roundTrip(ctx, nil, nil, []*scriptCall{sc}); err != nil {
		return err
	}
	if sc.err != nil {
		return newBackendError(sc.err)
	}
	return nil
}

// roundTrip sends a lone decision d, or ds and scs, to Redis in one round
// trip under the backend timeout (or ctx's earlier deadline), and fills in
// every outcome.
func (e *engine) roundTrip(ctx context.Context, d *decision, ds []*decision, scs []*scriptCall) *BackendError {
	// A caller's deadline within the backend timeout already bounds the
	// call; only a later one (or none) needs a context of its own.
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > e.cfg.timeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.cfg.timeout)
		defer cancel()
	}
	if e.direct {
		if d != nil {
			e.sendOne(ctx, d)
		} else {
			e.send(ctx, ds, scs)
		}
		return nil
	}
	err := e.bounded(ctx, func(ctx context.Context) error {
		if d != nil {
			e.sendOne(ctx, d)
		} else {
			e.send(ctx, ds, scs)
		}
		return nil
	})
	if err != nil {
		return newBackendError(err)
	}
	return nil
}

// send makes the round trip of roundTrip: one decide.lua call per group of
// decisions (at most maxDecide each) and the script calls, as one pipeline.
// A decision that failed inside a call of several (decide.lua answers it
// -1) is sent once more alone, to learn its error.
func (e *engine) send(ctx context.Context, ds []*decision, scs []*scriptCall) {
	if len(ds) == 1 && len(scs) == 0 {
		e.sendOne(ctx, ds[0])
		return
	}
	groups := e.groupDecisions(ds)
	calls := make([]*scriptCall, 0, len(groups)+len(scs))
	fcall := e.useFunctions()
	for _, g := range groups {
		calls = append(calls, &scriptCall{script: decideScript, cmd: newDecideCmd(ctx, g, fcall)})
	}
	calls = append(calls, scs...)
	e.pipelined(ctx, calls)

	var again []*decision
	for i, g := range groups {
		c := calls[i]
		if c.err == nil && len(c.reply) != 5*len(g) {
			c.err = fmt.Errorf("ratelimit: unexpected reply of %d integers to %d decisions", len(c.reply), len(g))
		}
		for j, d := range g {
			if c.err != nil {
				d.err = c.err
				continue
			}
			copy(d.reply[:], c.reply[5*j:5*j+5])
			if d.reply[0] == -1 {
				again = append(again, d)
			}
		}
	}
	if len(again) == 0 {
		return
	}
	alone := make([]*scriptCall, len(again))
	fcall = e.useFunctions()
	for i, d := range again {
		alone[i] = &scriptCall{script: decideScript, cmd: newDecideCmd(ctx, []*decision{d}, fcall)}
	}
	e.pipelined(ctx, alone)
	for i, d := range again {
		switch c := alone[i]; {
		case c.err != nil:
			d.err = c.err
		case len(c.reply) != 5:
			d.err = fmt.Errorf("ratelimit: unexpected reply of %d integers to a decision", len(c.reply))
		default:
			copy(d.reply[:], c.reply)
		}
	}
}

// sendOne is send for a lone decision, without the grouping.
func (e *engine) sendOne(ctx context.Context, d *decision) {
	cmd := newDecideCmd(ctx, []*decision{d}, e.useFunctions())
	_ = e.client.Process(ctx, cmd)
	reply, err := cmd.Result()
	if err != nil {
		reply, err = e.recoverOne(ctx, decideScript, cmd, err)
	}
	switch {
	case err != nil:
		d.err = err
	case len(reply) != 5:
		d.err = fmt.Errorf("ratelimit: unexpected reply of %d integers to a decision", len(reply))
	default:
		copy(d.reply[:], reply)
	}
}

// groupFunc returns the group of a decision by its first key: decisions of
// one group may share a script call. A script may only touch keys of one
// node, and on a Redis Cluster of one slot.
type groupFunc func(key string) uint64

// oneGroup is for a single Redis (or a failover client): every key is on
// the one node.
func oneGroup(string) uint64 { return 0 }

// bySlot is for a Redis Cluster: the key's slot.
func bySlot(key string) uint64 { return uint64(slotOf(key)) }

// byTag is for a Ring, whose shard the client picks by the key's hash tag,
// and for clients of unknown kinds: decisions of one identity only.
func byTag(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(hashTag(key)))
	return h.Sum64()
}

// groupDecisions splits ds, in order, into the script calls they take:
// by group (and test clock), at most maxDecide per call.
func (e *engine) groupDecisions(ds []*decision) [][]*decision {
	if len(ds) == 0 {
		return nil
	}
	type groupKey struct {
		group uint64
		now   int64
	}
	var (
		groups [][]*decision
		index  map[groupKey]int
	)
	for _, d := range ds {
		k := groupKey{e.group(d.keys[0]), d.now}
		if index == nil {
			index = make(map[groupKey]int)
		}
		i, ok := index[k]
		if !ok || len(groups[i]) == maxDecide {
			i = len(groups)
			index[k] = i
			groups = append(groups, make([]*decision, 0, min(len(ds), maxDecide)))
		}
		groups[i] = append(groups[i], d)
	}
	return groups
}

// newDecideCmd builds FCALL of the decision function (fcall) or EVALSHA of
// decide.lua, numkeys keys... n now args..., for ds, as a typed command, so
// that the all-integer reply is read straight into an []int64.
func newDecideCmd(ctx context.Context, ds []*decision, fcall bool) *redis.IntSliceCmd {
	nkeys, nargs := 0, 2
	for _, d := range ds {
		nkeys += len(d.keys)
		nargs += d.nargs
	}
	a := make([]any, 3, 3+nkeys+nargs)
	if fcall {
		a[0], a[1], a[2] = "fcall", decideFunction, nkeys
	} else {
		a[0], a[1], a[2] = "evalsha", boxedHash(decideScript), nkeys
	}
	for _, d := range ds {
		for _, k := range d.keys {
			a = append(a, k)
		}
	}
	a = append(a, len(ds), ds[0].now)
	for _, d := range ds {
		a = append(a, d.args[:d.nargs]...)
	}
	return redis.NewIntSliceCmd(ctx, a...)
}

// newScriptCmd builds EVALSHA sha numkeys keys... args... as a typed
// command. Keys and args are copied, not retained.
func newScriptCmd(ctx context.Context, script *redis.Script, keys []string, args []any) *redis.IntSliceCmd {
	a := make([]any, 3+len(keys)+len(args))
	a[0], a[1], a[2] = "evalsha", boxedHash(script), len(keys)
	for i, k := range keys {
		a[3+i] = k
	}
	copy(a[3+len(keys):], args)
	return redis.NewIntSliceCmd(ctx, a...)
}

// splitScriptCmd returns the keys and args of a command built by
// newScriptCmd or newDecideCmd.
func splitScriptCmd(cmd *redis.IntSliceCmd) (keys []string, args []any) {
	a := cmd.Args()
	n := a[2].(int)
	keys = make([]string, n)
	for i := range keys {
		keys[i] = a[3+i].(string)
	}
	return keys, a[3+n:]
}

// pipelined sends calls as one pipeline (go-redis splits it per node on a
// Cluster) and fills in each call's reply or error. FCALLs that the server
// did not run are finished by recoverFunctions (after loading the library
// where it was missing, or as scripts). Calls that failed with
// NOSCRIPT (the script cache was flushed, or a node restarted or failed
// over) are retried, and only they: per script, its first failed call as
// EVAL, which runs it and puts the script back in the cache, and the others
// as EVALSHA behind it on the same connection; on a Cluster the EVAL reaches
// one node only, so calls that still get NOSCRIPT go once more, each as
// EVAL. No SCRIPT LOAD is needed, so a Redis ACL user limited to EVAL and
// EVALSHA is enough.
func (e *engine) pipelined(ctx context.Context, calls []*scriptCall) {
	if len(calls) == 1 {
		// One command: no pipeline object to build.
		c := calls[0]
		_ = e.client.Process(ctx, c.cmd)
		if c.reply, c.err = c.cmd.Result(); c.err != nil {
			c.reply, c.err = e.recoverOne(ctx, c.script, c.cmd, c.err)
		}
		return
	}
	pipe := e.client.Pipeline()
	for _, c := range calls {
		_ = pipe.Process(ctx, c.cmd)
	}
	_, _ = pipe.Exec(ctx)
	var retry, functions []*scriptCall
	for _, c := range calls {
		c.reply, c.err = c.cmd.Result()
		switch {
		case c.err == nil:
		case isFcall(c.cmd):
			functions = append(functions, c)
		case isNoScript(c.err):
			retry = append(retry, c)
		}
	}
	if len(functions) > 0 {
		if scripts := e.recoverFunctions(ctx, functions); len(scripts) > 0 {
			// As scripts, in a round trip of their own (EVALSHA, and EVAL
			// where NOSCRIPT); none is an FCALL any more.
			e.pipelined(ctx, scripts)
		}
	}
	if len(retry) == 0 {
		return
	}
	evals := map[*scriptCall]*redis.Cmd{}
	var loading []*redis.Script
	pipe = e.client.Pipeline()
	for _, c := range retry {
		if !slices.Contains(loading, c.script) {
			loading = append(loading, c.script)
			keys, args := splitScriptCmd(c.cmd)
			evals[c] = c.script.Eval(ctx, pipe, keys, args...)
			continue
		}
		c.cmd = redis.NewIntSliceCmd(ctx, c.cmd.Args()...)
		_ = pipe.Process(ctx, c.cmd)
	}
	_, _ = pipe.Exec(ctx)
	var again []*scriptCall
	for _, c := range retry {
		if ev, ok := evals[c]; ok {
			c.reply, c.err = ev.Int64Slice()
			continue
		}
		c.reply, c.err = c.cmd.Result()
		if c.err != nil && isNoScript(c.err) {
			again = append(again, c)
		}
	}
	if len(again) == 0 {
		return
	}
	pipe = e.client.Pipeline()
	last := make([]*redis.Cmd, len(again))
	for i, c := range again {
		keys, args := splitScriptCmd(c.cmd)
		last[i] = c.script.Eval(ctx, pipe, keys, args...)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range again {
		c.reply, c.err = last[i].Int64Slice()
	}
}

func isNoScript(err error) bool { return redis.HasErrorPrefix(err, "NOSCRIPT") }

// hashes holds each script's SHA-1 as an interface value, boxed once:
// boxing the string on every call would allocate.
var hashes sync.Map // *redis.Script -> any(string)

func boxedHash(s *redis.Script) any {
	if h, ok := hashes.Load(s); ok {
		return h
	}
	h, _ := hashes.LoadOrStore(s, any(s.Hash()))
	return h
}
