package main

import (
	"context"
	"errors"
	"math"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// rlsServer is envoy.service.ratelimit.v3.RateLimitService on a Service.
type rlsServer struct {
	rlsv3.UnimplementedRateLimitServiceServer
	svc   *Service
	style HeaderStyle
}

var _ rlsv3.RateLimitServiceServer = (*rlsServer)(nil)

// ShouldRateLimit decides every descriptor of the request at once: all
// enforced descriptors are charged in one Redis script, all or nothing.
func (s *rlsServer) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	r, err := fromProto(req)
	if err != nil {
		s.svc.metrics.request("grpc", "error")
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	dec, err := s.svc.Decide(ctx, r, ModeCheck, zeroTime)
	if err != nil {
		s.svc.metrics.request("grpc", "error")
		return nil, grpcError(ctx, err)
	}
	s.svc.metrics.request("grpc", codeLabel(dec.Code))
	return toProto(dec, s.style), nil
}

func codeLabel(c Code) string {
	if c == CodeOverLimit {
		return "over_limit"
	}
	return "ok"
}

// grpcError maps an error of Decide to a gRPC status.
func grpcError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, errBadRequest), errors.Is(err, ratelimit.ErrInvalidCost),
		errors.Is(err, ratelimit.ErrInvalidLimit), errors.Is(err, ratelimit.ErrInvalidIdentity):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

var unitNames = map[typev3.RateLimitUnit]string{
	typev3.RateLimitUnit_SECOND: "second",
	typev3.RateLimitUnit_MINUTE: "minute",
	typev3.RateLimitUnit_HOUR:   "hour",
	typev3.RateLimitUnit_DAY:    "day",
	typev3.RateLimitUnit_MONTH:  "month",
	typev3.RateLimitUnit_YEAR:   "year",
}

func fromProto(req *rlsv3.RateLimitRequest) (Request, error) {
	r := Request{Domain: req.GetDomain(), Hits: uint64(req.GetHitsAddend()), Descriptors: make([]Descriptor, len(req.GetDescriptors()))}
	for i, d := range req.GetDescriptors() {
		desc := Descriptor{Entries: make([]Entry, len(d.GetEntries()))}
		for j, e := range d.GetEntries() {
			desc.Entries[j] = Entry{Key: e.GetKey(), Value: e.GetValue()}
		}
		if o := d.GetLimit(); o != nil {
			unit, ok := unitNames[o.GetUnit()]
			if !ok {
				return Request{}, badRequest("descriptor %d: limit override has unit %v", i, o.GetUnit())
			}
			desc.Override = &Override{RequestsPerUnit: o.GetRequestsPerUnit(), Unit: unit, Multiplier: o.GetUnitMultiplier().GetValue()}
		}
		if h := d.GetHitsAddend(); h != nil {
			v := h.GetValue()
			if d.GetIsNegativeHits() {
				// Negative hits (giving budget back) are not supported:
				// the descriptor is reported, not charged.
				v = 0
			}
			desc.Hits = &v
		}
		r.Descriptors[i] = desc
	}
	return r, nil
}

var protoUnit = map[string]rlsv3.RateLimitResponse_RateLimit_Unit{
	"second": rlsv3.RateLimitResponse_RateLimit_SECOND,
	"minute": rlsv3.RateLimitResponse_RateLimit_MINUTE,
	"hour":   rlsv3.RateLimitResponse_RateLimit_HOUR,
	"day":    rlsv3.RateLimitResponse_RateLimit_DAY,
	"week":   rlsv3.RateLimitResponse_RateLimit_WEEK,
	"month":  rlsv3.RateLimitResponse_RateLimit_MONTH,
	"year":   rlsv3.RateLimitResponse_RateLimit_YEAR,
}

func toProto(dec Decision, style HeaderStyle) *rlsv3.RateLimitResponse {
	resp := &rlsv3.RateLimitResponse{
		OverallCode: rlsv3.RateLimitResponse_Code(dec.Code),
		Statuses:    make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(dec.Statuses)),
	}
	for i, st := range dec.Statuses {
		ps := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_Code(st.Code), LimitRemaining: st.Remaining}
		if st.Rule != nil && !st.Rule.Unlimited {
			ps.CurrentLimit = &rlsv3.RateLimitResponse_RateLimit{
				Name:            st.Rule.Name,
				RequestsPerUnit: st.Rule.RequestsPerUnit,
				Unit:            protoUnit[st.Rule.Unit],
			}
			if st.Multiplier > 1 {
				ps.CurrentLimit.UnitMultiplier = wrapperspb.UInt32(st.Multiplier)
			}
		}
		if st.Limited {
			ps.DurationUntilReset = durationpb.New(st.Reset)
		}
		if st.Remaining == math.MaxUint32 && st.Rule == nil {
			ps.LimitRemaining = math.MaxUint32
		}
		resp.Statuses[i] = ps
	}
	for _, h := range headers(style, dec) {
		resp.ResponseHeadersToAdd = append(resp.ResponseHeadersToAdd, &corev3.HeaderValue{Key: h.Key, Value: h.Value})
	}
	return resp
}
