package main

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/relaymesh/relaymesh/edge/steer"
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

// totalSubscribers reports how many downstream subscriptions this node
// feeds, all streams together.
func (m *metrics) totalSubscribers() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	total := 0
	for _, n := range m.subsNow {
		total += n
	}
	return total
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

var (
	nodeViewersDesc = prometheus.NewDesc("relaymesh_node_viewers",
		"Viewers on this node, all streams together.", nil, nil)
	nodeCapacityDesc = prometheus.NewDesc("relaymesh_node_capacity",
		"Viewers this node is meant to hold (--capacity, or --max-viewers); 0: unlimited.", nil, nil)
	nodeHeadroomDesc = prometheus.NewDesc("relaymesh_node_headroom",
		"Viewers this node can still take before its capacity (absent without one).", nil, nil)
	nodeDrainingDesc = prometheus.NewDesc("relaymesh_node_draining",
		"1 while this node drains.", nil, nil)
	meshViewersDesc = prometheus.NewDesc("relaymesh_mesh_viewers",
		"Viewers on every node of the mesh, as this node sees it.", nil, nil)
	meshReadyDesc = prometheus.NewDesc("relaymesh_mesh_ready_nodes",
		"Nodes taking new viewers (ready, not draining).", nil, nil)
	meshCapacityDesc = prometheus.NewDesc("relaymesh_mesh_capacity",
		"Capacity of the ready nodes that have one.", nil, nil)
	meshHeadroomDesc = prometheus.NewDesc("relaymesh_mesh_headroom",
		"Viewers the ready nodes with a capacity can still take: scale out when it runs low.", nil, nil)
	meshUtilizationDesc = prometheus.NewDesc("relaymesh_mesh_utilization",
		"Share of the ready nodes' capacity in use, 0 to 1 (an autoscaling target).", nil, nil)
	decisionsDesc = prometheus.NewDesc("relaymesh_viewer_decisions_total",
		"Viewer routing decisions: serve, redirect or shed a new session, or steer a playing one; reason says why.",
		[]string{"decision", "reason"}, nil)
)

// routingCollector reports load, capacity and headroom, for this node and
// the mesh, and the routing decisions taken, at scrape time.
type routingCollector struct{ n *node }

func (c routingCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{nodeViewersDesc, nodeCapacityDesc, nodeHeadroomDesc, nodeDrainingDesc,
		meshViewersDesc, meshReadyDesc, meshCapacityDesc, meshHeadroomDesc, meshUtilizationDesc, decisionsDesc} {
		ch <- d
	}
}

func (c routingCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	viewers, capacity := n.viewers(), n.flags.capacity()
	gauge(nodeViewersDesc, float64(viewers))
	gauge(nodeCapacityDesc, float64(capacity))
	if capacity > 0 {
		gauge(nodeHeadroomDesc, float64(capacity-viewers))
	}
	draining := 0.0
	if n.draining() {
		draining = 1
	}
	gauge(nodeDrainingDesc, draining)
	t := steer.Sum(n.routingNodes())
	gauge(meshViewersDesc, float64(t.Viewers))
	gauge(meshReadyDesc, float64(t.Ready))
	gauge(meshCapacityDesc, float64(t.Capacity))
	gauge(meshHeadroomDesc, float64(t.Headroom))
	gauge(meshUtilizationDesc, t.Utilization())
	if rt := n.hls.Routing; rt != nil && rt.Router != nil {
		for decision, reasons := range rt.Router.Decisions() {
			for reason, count := range reasons {
				ch <- prometheus.MustNewConstMetric(decisionsDesc, prometheus.CounterValue, float64(count), decision, string(reason))
			}
		}
	}
}
