package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// splitURLs reads a comma-separated list of endpoints. A cluster is loaded
// through several nodes at once, so -url and -sender-url take lists; an
// empty item is a typo, not a request for a default.
func splitURLs(raw string) ([]string, error) {
	parts := strings.Split(raw, ",")
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, errors.New("empty item in the URL list")
		}
		out = append(out, p)
	}
	return out, nil
}

// checkURLList checks every item of a -url style list: ws://, loopback.
func checkURLList(list []string) error {
	for _, u := range list {
		if err := checkLoopback(u, "ws"); err != nil {
			return fmt.Errorf("%s: %w", u, err)
		}
	}
	return nil
}

// roomURLs applies the target's URL rule (room appended or not) to each
// base endpoint.
func roomURLs(t Target, bases []string, room string) []string {
	out := make([]string, len(bases))
	for i, b := range bases {
		out[i] = t.URL(b, room)
	}
	return out
}

// checkLoopback accepts only URLs of the given scheme whose host is an
// IPv4 address in 127.0.0.0/8: load is only ever generated against this
// machine, and our source addresses (127.0.0.x) cannot reach an IPv6
// localhost.
func checkLoopback(raw, scheme string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme != scheme {
		return fmt.Errorf("want a %s:// URL", scheme)
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil || ip.To4() == nil || ip.To4()[0] != 127 {
		return errors.New("host must be a loopback IPv4 address (127.0.0.0/8)")
	}
	return nil
}

// dialSpec says where one connection goes and as whom.
type dialSpec struct {
	uid string
	url string
}

// idleSpecs names idle connections offset .. offset+n-1 and spreads them
// over urls by their global number, so children of a -procs run, each
// with its own offset, together fill every endpoint evenly.
func idleSpecs(n, offset int, mode string, urls []string) []dialSpec {
	uids := idleUIDs(n, offset, mode)
	specs := make([]dialSpec, n)
	for i, uid := range uids {
		specs[i] = dialSpec{uid: uid, url: urls[(offset+i)%len(urls)]}
	}
	return specs
}

// fanoutSpecs puts sender i on senderURLs[i%len] and receiver j on
// urls[j%len]: with senders on one node and receivers on another, every
// measured delivery crosses the cluster.
func fanoutSpecs(cfg fanoutConfig, urls, senderURLs []string) []dialSpec {
	uids := fanoutUIDs(cfg)
	specs := make([]dialSpec, len(uids))
	for i, uid := range uids {
		if i < cfg.Senders {
			specs[i] = dialSpec{uid: uid, url: senderURLs[i%len(senderURLs)]}
		} else {
			j := i - cfg.Senders
			specs[i] = dialSpec{uid: uid, url: urls[j%len(urls)]}
		}
	}
	return specs
}
