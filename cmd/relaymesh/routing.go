package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/relaymesh/relaymesh/edge"
	"github.com/relaymesh/relaymesh/edge/steer"
	"github.com/relaymesh/relaymesh/mesh"
)

// routingFlags are the settings that send viewers across the mesh.
type routingFlags struct {
	PublicURL     string
	SteeringTTL   time.Duration
	Capacity      int
	MaxViewers    int
	DrainTimeout  time.Duration
	RegionHeader  string
	Regions       string
	OriginOffload bool
	APIToken      string
}

func (f *routingFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.PublicURL, "public-url", "", "how viewers reach this node, e.g. https://edge-paris.example.com (default: http(s)://ADVERTISE:HTTP-PORT)")
	fs.DurationVar(&f.SteeringTTL, "steering-ttl", 3*time.Second, "how often players ask where to play from (HLS Content Steering TTL, whole seconds)")
	fs.IntVar(&f.Capacity, "capacity", 0, "viewers this node is meant to hold: above it new viewers are sent elsewhere (0: --max-viewers, or unlimited)")
	fs.IntVar(&f.MaxViewers, "max-viewers", 0, "hard limit: past it a new viewer gets 503 when no other node has room (0: none)")
	fs.DurationVar(&f.DrainTimeout, "drain-timeout", 60*time.Second, "on SIGTERM or `relaymesh drain`, how long to keep serving viewers who have not moved away")
	fs.StringVar(&f.RegionHeader, "region-header", "", "request header that names the viewer's region, set by your front balancer (e.g. X-Viewer-Region)")
	fs.StringVar(&f.Regions, "regions", "", "file of \"CIDR region\" lines mapping viewer addresses to regions")
	fs.BoolVar(&f.OriginOffload, "origin-offload", true, "send viewers to edges with room before origins: an origin redirects new viewers, steering lists it last")
	fs.StringVar(&f.APIToken, "api-token", "", "bearer token for the control API (POST /api/v1/drain); without one it answers loopback clients only")
}

func (f *routingFlags) validate() error {
	if f.Capacity < 0 || f.MaxViewers < 0 {
		return errors.New("--capacity and --max-viewers cannot be negative")
	}
	if f.Capacity > 0 && f.MaxViewers > 0 && f.Capacity > f.MaxViewers {
		return fmt.Errorf("--capacity %d is above --max-viewers %d: the soft limit must not exceed the hard one", f.Capacity, f.MaxViewers)
	}
	if f.SteeringTTL < time.Second || f.SteeringTTL > time.Minute {
		return fmt.Errorf("--steering-ttl %v: choose between 1s and 1m", f.SteeringTTL)
	}
	if f.DrainTimeout < 0 {
		return fmt.Errorf("--drain-timeout %v: cannot be negative (0 stops at once)", f.DrainTimeout)
	}
	if f.PublicURL != "" {
		u, err := url.Parse(f.PublicURL)
		switch {
		case err != nil:
			return fmt.Errorf("--public-url %q: %v", f.PublicURL, err)
		case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
			return fmt.Errorf("--public-url %q: want http(s)://host[:port][/path]", f.PublicURL)
		case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
			return fmt.Errorf("--public-url %q: no query, fragment or user info", f.PublicURL)
		case len(f.PublicURL) > 200:
			return fmt.Errorf("--public-url is %d bytes: use at most 200 (it is gossiped)", len(f.PublicURL))
		case strings.ContainsAny(f.PublicURL, "\"\\ "):
			return fmt.Errorf("--public-url %q: no quotes, backslashes or spaces", f.PublicURL)
		}
		f.PublicURL = strings.TrimSuffix(f.PublicURL, "/")
	}
	if f.RegionHeader != "" && strings.ContainsAny(f.RegionHeader, " :\t") {
		return fmt.Errorf("--region-header %q: want a header name such as X-Viewer-Region", f.RegionHeader)
	}
	return nil
}

// capacity is what the node gossips for routing: --capacity, or the hard
// limit when only that is set.
func (f *routingFlags) capacity() int {
	if f.Capacity > 0 {
		return f.Capacity
	}
	return f.MaxViewers
}

// publicURL is --public-url, or the URL the HTTP listener has at the
// advertised host.
func (f *nodeFlags) publicURL(scheme string, ln net.Listener) string {
	if f.PublicURL != "" {
		return f.PublicURL
	}
	if ln == nil {
		return ""
	}
	return scheme + "://" + withPort(f.advertiseHost(), ln.Addr())
}

// newRouting sets up viewer routing for a node in a mesh.
func (n *node) newRouting() (*edge.Routing, error) {
	f := &n.flags
	rt := &edge.Routing{
		Router: &steer.Router{
			Mesh:       routingView{n},
			Policy:     steer.Policy{OriginOffload: f.OriginOffload},
			MaxViewers: f.MaxViewers,
		},
		Node: f.NodeName, TTL: f.SteeringTTL, RegionHeader: f.RegionHeader, Region: f.Region,
	}
	if f.Regions != "" {
		file, err := os.Open(f.Regions)
		if err != nil {
			return nil, fmt.Errorf("--regions: %w", err)
		}
		defer file.Close()
		if rt.Regions, err = steer.ParseRegions(file); err != nil {
			return nil, fmt.Errorf("--regions %s: %w", f.Regions, err)
		}
		n.log.Info("viewer regions loaded", "file", f.Regions, "prefixes", rt.Regions.Len())
	}
	if !steer.ValidPathwayID(f.NodeName) {
		n.log.Warn("this node's name cannot be a content steering pathway (letters, digits, '.', '-' and '_' only): no viewer will be steered or redirected to it",
			"node_name", f.NodeName)
	}
	return rt, nil
}

// routingView is the mesh as viewer routing reads it: gossiped state, with
// this node's own viewers and state as they are now.
type routingView struct{ n *node }

func (v routingView) LoadInterval() time.Duration {
	if c := v.n.cluster; c != nil {
		return c.mesh.LoadInterval()
	}
	return mesh.LoadInterval(1)
}

func (v routingView) Nodes() []steer.Node {
	c := v.n.cluster
	if c == nil {
		return v.n.routingNodes()
	}
	states := c.mesh.Nodes()
	out := make([]steer.Node, 0, len(states))
	self := c.mesh.LocalName()
	for _, s := range states {
		sn := steer.Node{
			Name: s.Name, URL: s.PublicURL, Region: s.Region, Origin: s.Role == mesh.RoleOrigin,
			Ready: s.State == mesh.StateReady, Draining: s.State == mesh.StateDraining,
			Viewers: s.Viewers, Capacity: s.Capacity, CPU: s.CPU, Heard: s.Heard,
		}
		if s.Name == self {
			state := v.n.state.Load().(mesh.State)
			sn.Ready, sn.Draining = state == mesh.StateReady, state == mesh.StateDraining
			sn.Viewers, sn.URL = v.n.viewers(), v.n.publicURL
		} else if rtt, ok := c.mesh.RTT(s.Name); ok {
			sn.RTT = rtt
		}
		out = append(out, sn)
	}
	return out
}

// viewers is how many viewers this node has, all streams together.
func (n *node) viewers() int {
	total := 0
	for _, v := range n.hls.Viewers() {
		total += v
	}
	return total
}

// routingNodes is the mesh as routing sees it, or this node alone.
func (n *node) routingNodes() []steer.Node {
	if n.cluster != nil {
		return routingView{n}.Nodes()
	}
	state := n.state.Load().(mesh.State)
	return []steer.Node{{
		Name: n.flags.NodeName, URL: n.publicURL, Region: n.flags.Region, Origin: n.role == mesh.RoleOrigin,
		Ready: state == mesh.StateReady, Draining: state == mesh.StateDraining,
		Viewers: n.viewers(), Capacity: n.flags.capacity(),
	}}
}
