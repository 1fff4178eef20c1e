package detect

import (
	"fmt"
	"net/netip"
)

// addr is a client address packed into fixed-size state: the 16-byte form
// of the IP, IPv4 as ::ffff:a.b.c.d, all zeros when absent (the unspecified
// address is never a client). No allocation, no flags byte, and it still
// prints in full in a finding's evidence.
type addr [16]byte

func packAddr(ip netip.Addr) addr {
	if !ip.IsValid() {
		return addr{}
	}
	return addr(ip.Unmap().As16())
}

func (a addr) valid() bool { return a != addr{} }

// is4 reports an IPv4 address in its IPv4-mapped form.
func (a addr) is4() bool {
	return [12]byte(a[:12]) == [12]byte{10: 0xff, 11: 0xff}
}

func (a addr) netip() netip.Addr {
	if !a.valid() {
		return netip.Addr{}
	}
	return netip.AddrFrom16(a).Unmap()
}

func (a addr) String() string {
	if !a.valid() {
		return ""
	}
	return a.netip().String()
}

// sameNetwork reports whether two addresses share the /24 (IPv4) or /48
// (IPv6) the contract uses as "the same network": one household, office or
// mobile carrier pool, where address changes are routine.
func sameNetwork(a, b addr) bool {
	if a.is4() != b.is4() {
		return false
	}
	if a.is4() {
		// IPv4 sits in the last 4 bytes of the 16-byte form: compare its first 3.
		return a[12] == b[12] && a[13] == b[13] && a[14] == b[14]
	}
	return [6]byte(a[:6]) == [6]byte(b[:6])
}

// network is a client network in fixed size: its ASN and the /24 or /48 it
// sits in, folded to 32 bits (only identity matters).
type network struct {
	asn    uint32
	prefix uint32
}

func networkOf(a addr, asn uint32) network {
	if !a.valid() {
		return network{asn: asn}
	}
	var p uint32
	if a.is4() {
		p = uint32(a[12])<<16 | uint32(a[13])<<8 | uint32(a[14]) | 1<<31
	} else {
		// Fold the /48 into 31 bits; the top bit tells it from an IPv4 /24.
		p = (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) ^
			(uint32(a[4])<<8 | uint32(a[5]))
		p &^= 1 << 31
	}
	return network{asn: asn, prefix: p}
}

// differentNetwork applies the contract's "cannot be the same client" rule to
// two networks: different ASN and different /24 (/48). Unknown ASNs cannot
// establish a difference.
func differentNetwork(a, b network) bool {
	if a.asn == 0 || b.asn == 0 || a.asn == b.asn {
		return false
	}
	return a.prefix != b.prefix
}

// natRanges holds the operator's known NAT egress ranges (carrier-grade NAT,
// corporate proxies, VPN concentrators): many unrelated clients share those
// addresses, so an address there says nothing about who the client is.
type natRanges []netip.Prefix

func parseNATRanges(cidrs []string) (natRanges, error) {
	out := make(natRanges, 0, len(cidrs))
	for i, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("nat_egress_ranges[%d] %q: %w", i, c, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (n natRanges) contains(a addr) bool {
	if !a.valid() || len(n) == 0 {
		return false
	}
	ip := a.netip()
	for _, p := range n {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
