package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics is what /metrics exposes. Each server has its own registry, so
// several servers in one test binary do not collide.
type metrics struct {
	registry   *prometheus.Registry
	sessions   prometheus.Gauge
	rooms      prometheus.Gauge
	received   prometheus.Counter
	delivered  prometheus.Counter
	closes     *prometheus.CounterVec
	recoveries *prometheus.CounterVec

	// Cluster mode only; registered by watchCluster.
	clusterUp       prometheus.Gauge
	publishSeconds  prometheus.Histogram
	publishErrors   prometheus.Counter
	acksLost        prometheus.Counter
	consumerPending prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_sessions", Help: "Open WebSocket sessions.",
		}),
		rooms: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_rooms", Help: "Rooms with at least one session.",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_messages_received_total", Help: "WebSocket messages received from clients.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_messages_delivered_total", Help: "Events queued to sessions (one per recipient).",
		}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_session_closes_total", Help: "Sessions the server closed, by reason.",
		}, []string{"reason"}),
		recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_recoveries_total", Help: "Connections that asked for recovery with ?since=, by whether everything after it could be replayed.",
		}, []string{"result"}),
		clusterUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_cluster_up", Help: "1 while the node can reach NATS and the stream, else 0.",
		}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "switchboard_cluster_publish_seconds", Help: "Time from publishing to the stream until its ack.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 100µs .. 3.3s
		}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_cluster_publish_errors_total", Help: "Messages the stream did not take; each sender was told.",
		}),
		acksLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_cluster_acks_lost_total", Help: "Publish acks lost to a disconnect or timeout. Each such message is answered once: as sent if it came back through the consumer, else as refused once the node knows the stream lacks it.",
		}),
		consumerPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_cluster_consumer_pending", Help: "Stream messages not yet delivered to this node (consumer lag), as of the last one delivered.",
		}),
	}
	for _, reason := range []string{"slow_consumer", "rate_limit", "heartbeat", "token_expired", "disconnected"} {
		m.closes.WithLabelValues(reason) // show zeros before the first close
	}
	m.recoveries.WithLabelValues("recovered")
	m.recoveries.WithLabelValues("not_recovered")
	m.registry.MustRegister(m.sessions, m.rooms, m.received, m.delivered, m.closes, m.recoveries,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// watchQueueBytes exposes the bytes waiting in all outbound queues. They are
// summed at scrape time, so the per-message path keeps no shared counter.
func (m *metrics) watchQueueBytes(total func() float64) {
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchboard_queue_bytes", Help: "Outbound bytes queued to sessions and not yet written.",
	}, total))
}

// recovered counts one recovery by its result.
func (m *metrics) recovered(ok bool) {
	result := "not_recovered"
	if ok {
		result = "recovered"
	}
	m.recoveries.WithLabelValues(result).Inc()
}

// watchHistory exposes what the history keeps, asked of the hub at scrape
// time so the message path keeps no shared counter.
func (m *metrics) watchHistory(stats func() (events, bytes float64)) {
	m.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchboard_history_messages", Help: "Room messages and publishes kept for history and recovery.",
		}, func() float64 { events, _ := stats(); return events }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchboard_history_bytes", Help: "Bytes the kept messages take, as counted against -history-max-bytes.",
		}, func() float64 { _, bytes := stats(); return bytes }))
}

// watchCluster registers the broker metrics; a single node does not show
// them.
func (m *metrics) watchCluster(c *clusterLink) {
	m.registry.MustRegister(m.clusterUp, m.publishSeconds, m.publishErrors, m.acksLost, m.consumerPending,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchboard_cluster_stream_seq", Help: "The last stream sequence delivered to this node.",
		}, func() float64 { return float64(c.lastSeq.Load()) }))
}
