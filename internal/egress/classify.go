package egress

import "net/netip"

// Kinds of non-public address, as Classify names them. They are also the
// reason label of the gateway's refusal metric, so the set stays small.
const (
	KindLoopback    = "loopback"
	KindPrivate     = "private"
	KindLinkLocal   = "link-local"
	KindUnspecified = "unspecified"
	KindMulticast   = "multicast"
	KindThisNetwork = "this-network"
	KindCGNAT       = "shared (carrier-grade NAT)"
	KindIETF        = "IETF protocol"
	KindBenchmark   = "benchmarking"
	KindDocs        = "documentation"
	KindReserved    = "reserved"
	KindInvalid     = "invalid"
)

// special are the special-purpose ranges (RFC 6890 and its IANA registries)
// netip has no predicate for. 255.255.255.255 (broadcast) is inside
// 240.0.0.0/4.
var special = []struct {
	prefix netip.Prefix
	kind   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), KindThisNetwork},
	{netip.MustParsePrefix("100.64.0.0/10"), KindCGNAT},
	{netip.MustParsePrefix("192.0.0.0/24"), KindIETF},
	{netip.MustParsePrefix("192.0.2.0/24"), KindDocs},
	{netip.MustParsePrefix("198.51.100.0/24"), KindDocs},
	{netip.MustParsePrefix("203.0.113.0/24"), KindDocs},
	{netip.MustParsePrefix("198.18.0.0/15"), KindBenchmark},
	{netip.MustParsePrefix("240.0.0.0/4"), KindReserved},
	{netip.MustParsePrefix("2001:db8::/32"), KindDocs},
	{netip.MustParsePrefix("3fff::/20"), KindDocs},
	{netip.MustParsePrefix("2001:2::/48"), KindBenchmark},
	{netip.MustParsePrefix("100::/64"), KindReserved},      // discard-only
	{netip.MustParsePrefix("2001::/23"), KindIETF},         // IETF protocol assignments (Teredo is handled first)
	{netip.MustParsePrefix("5f00::/16"), KindReserved},     // SRv6 SIDs
	{netip.MustParsePrefix("::/8"), KindReserved},          // what is left of ::/8 after the forms below
	{netip.MustParsePrefix("fec0::/10"), KindPrivate},      // deprecated site-local
	{netip.MustParsePrefix("64:ff9b:1::/48"), KindPrivate}, // local-use NAT64 whose IPv4 is not public either way
}

// Forms of IPv6 address that carry an IPv4 address a router or a relay
// delivers to; Classify checks that IPv4 address.
var (
	nat64      = netip.MustParsePrefix("64:ff9b::/96")    // RFC 6052 well-known prefix
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")  // RFC 8215 local use, IPv4 in the last 32 bits
	compat     = netip.MustParsePrefix("::/96")           // deprecated IPv4-compatible, ::a.b.c.d
	siit       = netip.MustParsePrefix("::ffff:0:0:0/96") // IPv4-translated (RFC 2765)
	sixToFour  = netip.MustParsePrefix("2002::/16")       // 6to4: IPv4 in bits 16..48
	teredo     = netip.MustParsePrefix("2001::/32")       // Teredo: client IPv4 inverted in the last 32 bits
)

// Embedded returns the IPv4 address a carries in one of the transition
// forms (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64, 6to4,
// Teredo's client address), and whether it carries one.
func Embedded(a netip.Addr) (netip.Addr, bool) {
	a = a.WithZone("")
	if a.Is4In6() {
		return a.Unmap(), true
	}
	if !a.Is6() {
		return netip.Addr{}, false
	}
	b := a.As16()
	last := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	switch {
	case nat64.Contains(a), nat64Local.Contains(a), siit.Contains(a):
		return last, true
	case compat.Contains(a):
		// :: and ::1 are themselves, not IPv4-compatible forms.
		if a == netip.IPv6Unspecified() || a == netip.IPv6Loopback() {
			return netip.Addr{}, false
		}
		return last, true
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), true
	case teredo.Contains(a):
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}), true
	}
	return netip.Addr{}, false
}

// Classify names the kind of a non-public address, or returns "" for a
// public one. An IPv6 form carrying an IPv4 address (see Embedded) has the
// kind of that IPv4 address; zones are ignored.
func Classify(a netip.Addr) string {
	if !a.IsValid() {
		return KindInvalid
	}
	a = a.WithZone("")
	if v4, ok := Embedded(a); ok {
		if kind := classify(v4); kind != "" {
			return kind
		}
		// A public IPv4 address, mapped or behind the well-known NAT64
		// prefix or 6to4, is public; the other forms are deprecated or
		// site-specific and are classified as IPv6 below.
		if a.Is4In6() || nat64.Contains(a) || sixToFour.Contains(a) {
			return ""
		}
	}
	return classify(a)
}

func classify(a netip.Addr) string {
	switch {
	case a.IsLoopback():
		return KindLoopback
	case a.IsUnspecified():
		return KindUnspecified
	case a.IsPrivate():
		return KindPrivate
	case a.IsMulticast():
		return KindMulticast
	case a.IsLinkLocalUnicast():
		return KindLinkLocal
	}
	for _, r := range special {
		if r.prefix.Contains(a) {
			return r.kind
		}
	}
	return ""
}

// never are the kinds no allow list opens: no upstream lives at them, and
// the kernel turns an unspecified destination into loopback.
var never = map[string]bool{KindUnspecified: true, KindMulticast: true, KindThisNetwork: true, KindInvalid: true}

// canonical returns the address a policy compares: the embedded IPv4
// address of a transition form, else a without its zone.
func canonical(a netip.Addr) netip.Addr {
	if v4, ok := Embedded(a); ok {
		return v4
	}
	return a.WithZone("")
}
