package steer

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
)

// Regions maps client addresses to region labels, from the operator's
// --regions file. The zero value maps nothing.
type Regions struct {
	bits   []int // prefix lengths present, longest first
	byBits map[int]map[netip.Prefix]string
}

// maxRegionLen bounds a region label, as the mesh's gossip does.
const maxRegionLen = 64

// ParseRegions reads lines of "CIDR region" (e.g. "203.0.113.0/24
// eu-west"); blank lines and lines starting with # are skipped. The
// longest matching prefix wins. Errors name the line.
func ParseRegions(r io.Reader) (*Regions, error) {
	g := &Regions{byBits: map[int]map[netip.Prefix]string{}}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want \"CIDR region\", got %q", line, text)
		}
		pfx, err := netip.ParsePrefix(f[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if len(f[1]) > maxRegionLen {
			return nil, fmt.Errorf("line %d: region %q is longer than %d bytes", line, f[1], maxRegionLen)
		}
		if pfx.Addr().Is4In6() && pfx.Bits() >= 96 {
			pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
		}
		pfx = pfx.Masked()
		key := bitsKey(pfx)
		if g.byBits[key] == nil {
			g.byBits[key] = map[netip.Prefix]string{}
			g.bits = append(g.bits, key)
		}
		g.byBits[key][pfx] = f[1]
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	slices.Sort(g.bits)
	slices.Reverse(g.bits)
	return g, nil
}

// bitsKey separates IPv4 from IPv6 prefix lengths.
func bitsKey(p netip.Prefix) int {
	if p.Addr().Is4() {
		return p.Bits()
	}
	return 1000 + p.Bits()
}

// Len is the number of prefixes.
func (g *Regions) Len() int {
	n := 0
	if g != nil {
		for _, m := range g.byBits {
			n += len(m)
		}
	}
	return n
}

// Lookup returns the region of addr, or "" when no prefix matches.
func (g *Regions) Lookup(addr netip.Addr) string {
	if g == nil || !addr.IsValid() {
		return ""
	}
	addr = addr.Unmap()
	for _, key := range g.bits {
		bits := key
		if key >= 1000 {
			if addr.Is4() {
				continue
			}
			bits = key - 1000
		} else if !addr.Is4() {
			continue
		}
		pfx, err := addr.Prefix(bits)
		if err != nil {
			continue
		}
		if region, ok := g.byBits[key][pfx]; ok {
			return region
		}
	}
	return ""
}
