package main

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/relaymesh/relaymesh/ingest"
)

// metrics are one node's Prometheus series, on a registry of its own so
// that several nodes can run in one process (relaymesh demo, tests).
type metrics struct {
	reg       *prometheus.Registry
	egress    *prometheus.CounterVec
	subs      *prometheus.GaugeVec
	switches  *prometheus.CounterVec
	partLag   *prometheus.HistogramVec
	egressSum atomic.Int64 // bytes sent to downstream nodes, for the gossiped rate

	mu      sync.Mutex
	subsNow map[string]int // downstream subscriptions per stream, for on-demand pulls
}

// newMetrics registers the series. viewers and members are read at scrape
// time from the edge server and the mesh.
func newMetrics(viewers func() map[string]int, members func() int) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		egress: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relaymesh_relay_egress_bytes_total",
			Help: "Bytes sent to downstream nodes over the QUIC relay.",
		}, []string{"peer"}),
		subs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relaymesh_relay_subscribers",
			Help: "Downstream nodes this node feeds a stream to.",
		}, []string{"stream"}),
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relaymesh_upstream_switches_total",
			Help: "Times a relayed stream moved to another upstream node.",
		}, []string{"stream"}),
		partLag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relaymesh_part_lag_seconds",
			Help:    "Time from a part's media end (PROGRAM-DATE-TIME plus duration) to its availability on this node.",
			Buckets: []float64{-0.01, 0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1},
		}, []string{"stream"}),
	}
	m.reg.MustRegister(m.egress, m.subs, m.switches, m.partLag,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&viewerCollector{viewers: viewers},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "relaymesh_mesh_members",
			Help: "Alive nodes in the mesh, this one included.",
		}, func() float64 { return float64(members()) }),
	)
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *metrics) onEgress(peer string, n int) {
	m.egress.WithLabelValues(peer).Add(float64(n))
	m.egressSum.Add(int64(n))
}

func (m *metrics) onSubscribers(stream string, n int) {
	m.mu.Lock()
	if m.subsNow == nil {
		m.subsNow = map[string]int{}
	}
	if n == 0 {
		delete(m.subsNow, stream)
	} else {
		m.subsNow[stream] = n
	}
	m.mu.Unlock()
	if n == 0 {
		m.subs.DeleteLabelValues(stream)
		return
	}
	m.subs.WithLabelValues(stream).Set(float64(n))
}

// subscribers reports how many downstream nodes a stream is relayed to.
func (m *metrics) subscribers(stream string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.subsNow[stream]
}

func (m *metrics) onSwitch(stream string) { m.switches.WithLabelValues(stream).Inc() }

func (m *metrics) onPart(stream string, lag time.Duration) {
	m.partLag.WithLabelValues(stream).Observe(lag.Seconds())
}

var viewersDesc = prometheus.NewDesc("relaymesh_viewers", "LL-HLS viewers of a stream on this node.", []string{"stream"}, nil)

// viewerCollector reports viewers per stream as they are at scrape time.
type viewerCollector struct{ viewers func() map[string]int }

func (c *viewerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- viewersDesc }

func (c *viewerCollector) Collect(ch chan<- prometheus.Metric) {
	for stream, n := range c.viewers() {
		ch <- prometheus.MustNewConstMetric(viewersDesc, prometheus.GaugeValue, float64(n), stream)
	}
}

var (
	ingestPublishersDesc = prometheus.NewDesc("relaymesh_ingest_publishers",
		"Encoders and pulls publishing to this node now.", []string{"proto"}, nil)
	ingestBytesDesc = prometheus.NewDesc("relaymesh_ingest_bytes_total",
		"Media bytes received from publishers (audio and video payload).", []string{"stream"}, nil)
	ingestFramesDesc = prometheus.NewDesc("relaymesh_ingest_frames_total",
		"Access units received from publishers.", []string{"stream"}, nil)
	ingestDroppedDesc = prometheus.NewDesc("relaymesh_ingest_dropped_total",
		"Access units or packets dropped as malformed, oversized or out of order.", []string{"stream"}, nil)
	ingestRefusedDesc = prometheus.NewDesc("relaymesh_ingest_refused_total",
		"Publishes refused: wrong key, stream busy, too many streams, bad name.", []string{"proto", "reason"}, nil)
)

// ingestCollector reports the ingest gate's counters at scrape time.
type ingestCollector struct{ gate *ingest.Gate }

func (c ingestCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{ingestPublishersDesc, ingestBytesDesc, ingestFramesDesc, ingestDroppedDesc, ingestRefusedDesc} {
		ch <- d
	}
}

func (c ingestCollector) Collect(ch chan<- prometheus.Metric) {
	live := map[string]int{}
	for _, s := range c.gate.Stats() {
		if s.Live {
			live[s.Proto]++
		}
		ch <- prometheus.MustNewConstMetric(ingestBytesDesc, prometheus.CounterValue, float64(s.Bytes), s.Stream)
		ch <- prometheus.MustNewConstMetric(ingestFramesDesc, prometheus.CounterValue, float64(s.Frames), s.Stream)
		ch <- prometheus.MustNewConstMetric(ingestDroppedDesc, prometheus.CounterValue, float64(s.Dropped), s.Stream)
	}
	for proto, n := range live {
		ch <- prometheus.MustNewConstMetric(ingestPublishersDesc, prometheus.GaugeValue, float64(n), proto)
	}
	for r, n := range c.gate.Refused() {
		ch <- prometheus.MustNewConstMetric(ingestRefusedDesc, prometheus.CounterValue, float64(n), r.Proto, r.Reason)
	}
}
