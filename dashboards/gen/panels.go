package main

// The panel conventions both dashboards share, on the SDK's typed builders:
// every panel and target uses the datasource variable, targets are in code
// mode with refIds A, B, ...; panels are numbered and laid out in the order
// they are added.

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/heatmap"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// schemaVersion is the classic model's version the files declare: Grafana
// 10.4 writes 39 and every later version migrates it forward on load. The
// SDK writes 42, the model of Grafana 12: a file declaring it would claim a
// model that Grafana 10.4 and 11 do not know, so the generator declares
// what the oldest supported Grafana writes.
const schemaVersion = 39

// dsInput is the name of the import-time input: Grafana's import dialog
// asks for a Prometheus data source and substitutes "${DS_PROMETHEUS}".
const dsInput = "DS_PROMETHEUS"

// dsVar is the data-source template variable every panel and target uses,
// so that a provisioned dashboard (no import dialog) follows the default
// Prometheus data source and a user can switch.
const dsVar = "${datasource}"

func ptr[T any](v T) *T { return &v }

// prometheusDS is what every panel, target and query variable points to.
func prometheusDS() common.DataSourceRef {
	return common.DataSourceRef{Type: ptr("prometheus"), Uid: ptr(dsVar)}
}

// query is one PromQL target of a panel before it is built.
type query struct {
	expr     string
	legend   string
	exemplar bool
}

// rangeTargets turns queries into range targets (what time series, stat
// and heatmap panels plot).
func rangeTargets(qs ...query) []cog.Builder[variants.Dataquery] {
	out := make([]cog.Builder[variants.Dataquery], len(qs))
	for i, q := range qs {
		out[i] = target(i).Expr(q.expr).LegendFormat(q.legend).Exemplar(q.exemplar).
			Format(prometheus.PromQueryFormatTimeSeries).Range()
	}
	return out
}

// target is the i-th target of a panel, without its query.
func target(i int) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().
		Datasource(prometheusDS()).
		EditorMode(prometheus.QueryEditorModeCode).
		RefId(string(rune('A' + i)))
}

// panelBuilder is what the SDK's panel builders (stat, timeseries, table,
// heatmap) have in common that the board needs.
type panelBuilder[T any] interface {
	cog.Builder[dashboard.Panel]
	Id(id uint32) T
	Span(w uint32) T
	Height(h uint32) T
}

// board builds one dashboard.
type board struct {
	d      *dashboard.DashboardBuilder
	panels uint32
}

// add numbers p and gives it w columns and h rows; the SDK's dashboard
// builder places it at the next free position, left to right, top to
// bottom, on the 24-column grid. (It starts a new row when a row is full,
// not when a panel would overflow it: every row here is filled exactly,
// and the committed files' grid is checked for overlaps.)
func add[T panelBuilder[T]](b *board, w, h uint32, p T) {
	b.panels++
	b.d.WithPanel(p.Id(b.panels).Span(w).Height(h))
}

// thresholds returns absolute threshold steps: green below the first
// value, then each (value, color) pair in turn.
func thresholds(steps ...step) *dashboard.ThresholdsConfigBuilder {
	list := []dashboard.Threshold{{Color: "green"}} // a nil value: the base step
	for _, s := range steps {
		list = append(list, dashboard.Threshold{Value: ptr(s.value), Color: s.color})
	}
	return dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps(list)
}

// step is a threshold: from value on, the color.
type step struct {
	value float64
	color string
}

// statPanel is a single number: the last value of q.
func statPanel(title, description, unit string, q query, steps ...step) *stat.PanelBuilder {
	return stat.NewPanelBuilder().
		Title(title).Description(description).
		Datasource(prometheusDS()).
		Targets(rangeTargets(q)).
		ColorScheme(dashboard.NewFieldColorBuilder().Mode(dashboard.FieldColorModeIdThresholds)).
		// No series means none of it happened (the counters of failures
		// are created by the first failure): show 0, not "No data".
		NoValue("0").
		Thresholds(thresholds(steps...)).
		Unit(unit).
		ColorMode(common.BigValueColorModeValue).
		GraphMode(common.BigValueGraphModeArea).
		JustifyMode(common.BigValueJustifyModeAuto).
		Orientation(common.VizOrientationAuto).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Fields("").Values(false)).
		ShowPercentChange(false).
		TextMode(common.BigValueTextModeAuto).
		WideLayout(true)
}

// timeseriesPanel is a line chart of qs.
func timeseriesPanel(title, description, unit string, qs ...query) *timeseries.PanelBuilder {
	return timeseries.NewPanelBuilder().
		Title(title).Description(description).
		Datasource(prometheusDS()).
		Targets(rangeTargets(qs...)).
		ColorScheme(dashboard.NewFieldColorBuilder().Mode(dashboard.FieldColorModeIdPaletteClassic)).
		AxisBorderShow(false).
		AxisCenteredZero(false).
		AxisColorMode(common.AxisColorModeText).
		AxisLabel("").
		AxisPlacement(common.AxisPlacementAuto).
		BarAlignment(common.BarAlignmentCenter).
		DrawStyle(common.GraphDrawStyleLine).
		FillOpacity(10).
		GradientMode(common.GraphGradientModeNone).
		HideFrom(common.NewHideSeriesConfigBuilder().Legend(false).Tooltip(false).Viz(false)).
		InsertNulls(common.BoolOrFloat64{Bool: ptr(false)}).
		LineInterpolation(common.LineInterpolationLinear).
		LineWidth(1).
		PointSize(4).
		ScaleDistribution(common.NewScaleDistributionConfigBuilder().Type(common.ScaleDistributionLinear)).
		ShowPoints(common.VisibilityModeNever).
		SpanNulls(common.BoolOrFloat64{Bool: ptr(false)}).
		Stacking(common.NewStackingConfigBuilder().Group("A").Mode(common.StackingModeNone)).
		ThresholdsStyle(common.NewGraphThresholdsStyleConfigBuilder().Mode(common.GraphThresholdsStyleModeOff)).
		Min(0).
		Thresholds(thresholds()).
		Unit(unit).
		Legend(common.NewVizLegendOptionsBuilder().
			Calcs([]string{"mean", "max"}).
			DisplayMode(common.LegendDisplayModeTable).
			Placement(common.LegendPlacementBottom).
			ShowLegend(true)).
		Tooltip(common.NewVizTooltipOptionsBuilder().Mode(common.TooltipDisplayModeMulti).Sort(common.SortOrderDescending))
}

// ratioPanel is a time series of a ratio, bounded to [0, 1].
func ratioPanel(title, description string, q query) *timeseries.PanelBuilder {
	return timeseriesPanel(title, description, "percentunit", q).Max(1)
}

// colorByName gives the series named name a fixed color.
func colorByName(name, color string) cog.Builder[dashboard.DashboardFieldConfigSourceOverrides] {
	return dashboard.NewDashboardFieldConfigSourceOverridesBuilder().
		Matcher(dashboard.MatcherConfig{Id: "byName", Options: name}).
		Properties([]dashboard.DynamicConfigValue{{
			Id:    "color",
			Value: dashboard.FieldColor{Mode: dashboard.FieldColorModeIdFixed, FixedColor: ptr(color)},
		}})
}

// topNamespaces is a table of the namespaces that blocked the largest share
// of their decisions over the dashboard's time range.
func topNamespaces() *table.PanelBuilder {
	inRange := func(s string) string { return "increase(" + s + "[$__range])" }
	ratio := "topk(10, " + sumBy("namespace", inRange(decisions(isBlocked))) + " / " + sumBy("namespace", inRange(decisions())) + ")"
	perSecond := sumBy("namespace", rate(decisions()))
	instant := func(i int, expr string) cog.Builder[variants.Dataquery] {
		return target(i).Expr(expr).LegendFormat("__auto").Exemplar(false).
			Format(prometheus.PromQueryFormatTable).Instant()
	}
	return table.NewPanelBuilder().
		Title("Top namespaces by block ratio").
		Description("The ten namespaces that blocked the largest share of their decisions over the selected time range, with their current decision rate.").
		Datasource(prometheusDS()).
		Targets([]cog.Builder[variants.Dataquery]{instant(0, ratio), instant(1, perSecond)}).
		ColorScheme(dashboard.NewFieldColorBuilder().Mode(dashboard.FieldColorModeIdThresholds)).
		Align(common.FieldTextAlignmentAuto).
		CellOptions(common.TableCellOptions{TableAutoCellOptions: &common.TableAutoCellOptions{Type: common.TableCellDisplayModeAuto}}).
		Inspect(false).
		Thresholds(thresholds(step{0.1, "yellow"}, step{0.5, "red"})).
		Unit("short").
		OverrideByName("Block ratio", []dashboard.DynamicConfigValue{
			{Id: "unit", Value: "percentunit"},
			{Id: "min", Value: 0},
			{Id: "max", Value: 1},
			{Id: "custom.cellOptions", Value: common.TableBarGaugeCellOptions{
				Type: common.TableCellDisplayModeGauge, Mode: ptr(common.BarGaugeDisplayModeGradient),
			}},
		}).
		OverrideByName("Decisions/s", []dashboard.DynamicConfigValue{{Id: "unit", Value: "ops"}}).
		CellHeight(common.TableCellHeightSm).
		Footer(common.NewTableFooterOptionsBuilder().CountRows(false).Reducer([]string{"sum"}).Show(false)).
		ShowHeader(true).
		SortBy([]cog.Builder[common.TableSortByFieldState]{
			common.NewTableSortByFieldStateBuilder().DisplayName("Block ratio").Desc(true),
		}).
		// One frame per query, merged into one table by namespace; frameIndex 0
		// is that table.
		FrameIndex(0).
		Transformations([]dashboard.DataTransformerConfig{
			{Id: "merge", Options: map[string]any{}},
			{Id: "organize", Options: map[string]any{
				"excludeByName": map[string]any{"Time": true},
				"indexByName":   map[string]any{"namespace": 0, "Value #A": 1, "Value #B": 2},
				"renameByName":  map[string]any{"namespace": "Namespace", "Value #A": "Block ratio", "Value #B": "Decisions/s"},
			}},
		})
}

// latencyHeatmap shows the distribution of round-trip durations over time
// from the classic buckets (Grafana turns the cumulative le buckets into
// cells), with exemplars.
func latencyHeatmap() *heatmap.PanelBuilder {
	return heatmap.NewPanelBuilder().
		Title("Round-trip latency heatmap").
		Description("The distribution of Redis round-trip durations over time (all selected namespaces), from the histogram's classic buckets; exemplars mark single requests with their trace.").
		Datasource(prometheusDS()).
		Targets([]cog.Builder[variants.Dataquery]{
			target(0).Expr(sumBy("le", "increase("+sel(durName+"_bucket")+"[$__rate_interval])")).
				LegendFormat("{{le}}").Exemplar(true).
				Format(prometheus.PromQueryFormatHeatmap).Range(),
		}).
		HideFrom(common.NewHideSeriesConfigBuilder().Legend(false).Tooltip(false).Viz(false)).
		ScaleDistribution(common.NewScaleDistributionConfigBuilder().Type(common.ScaleDistributionLinear)).
		Calculate(false).
		CellGap(1).
		CellValues(heatmap.NewCellValuesBuilder().Unit("short")).
		Color(heatmap.NewHeatmapColorOptionsBuilder().
			Exponent(0.5).Fill("dark-orange").Mode(heatmap.HeatmapColorModeScheme).Reverse(false).
			Scale(heatmap.HeatmapColorScaleExponential).Scheme("Oranges").Steps(64)).
		ExemplarsColor("rgba(255,0,255,0.7)").
		FilterValues(heatmap.NewFilterValueRangeBuilder().Le(1e-9)).
		ShowLegend().
		RowsFrame(heatmap.NewRowsHeatmapOptionsBuilder().Layout(common.HeatmapCellLayoutLe)).
		ShowValue(common.VisibilityModeNever).
		Tooltip(heatmap.NewHeatmapTooltipBuilder().Mode(common.TooltipDisplayModeSingle).ShowColorScale(false).YHistogram(true)).
		YAxis(heatmap.NewYAxisConfigBuilder().AxisPlacement(common.AxisPlacementLeft).Reverse(false).Unit("s"))
}
