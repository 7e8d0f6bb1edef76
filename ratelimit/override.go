package ratelimit

// WithLimit returns a Limiter that enforces limit instead of l's own, and
// shares everything else with l: client, namespace, algorithm, identity
// keys, options and bus. It is the per-call override for plans and tiers:
//
//	res, err := limiter.WithLimit(plans[user.Plan]).AllowN(ctx, user.ID, 1)
//
// is one small allocation and no Redis call (keep one view per plan to
// avoid even that). Because the keys are the same, an identity that changes
// plan keeps its state:
//   - TokenBucket keeps the tokens left (at most the new burst) and
//     refills at the new rate;
//   - FixedWindow and SlidingWindow keep the units already spent in the
//     current window (with a new Per, the spend of the old window that
//     overlaps the new one still counts); spend above a lowered quota
//     counts as the whole quota;
//   - SlidingLog keeps its log; a new Per counts the entries inside it
//     (entries pruned under a shorter Per are gone).
//
// The error wraps ErrInvalidLimit when limit cannot be enforced by l's
// algorithm. The returned Limiter does not own the client: its Close does
// nothing.
func (l *Limiter) WithLimit(limit Limit) (*Limiter, error) {
	pol, err := l.cfg.algorithm.prepare(limit)
	if err != nil {
		return nil, err
	}
	view := *l
	view.owned = false
	view.setLimit(limit, pol)
	return &view, nil
}
