//! Which addresses federation requests may go to.
//!
//! A server name is chosen by whoever sends us an event, an invite or a user ID, so without a
//! policy anyone could make this server send requests to its own loopback interface or to
//! machines on its private network. The check is made on resolved addresses, never on names, so
//! that a DNS answer (an A record, an SRV target, a `.well-known` delegation) cannot smuggle a
//! private address past it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether destinations may be non-public addresses (`federation.allow_private_addresses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPolicy {
    allow_private: bool,
}

impl AddressPolicy {
    pub fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }

    /// Whether a request may be sent to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }

    /// The addresses of `addrs` that requests may be sent to, in their order; an error naming
    /// what was refused when none is left.
    pub fn filter(&self, what: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, String> {
        if addrs.is_empty() {
            return Err(format!("{what} has no address"));
        }
        let (allowed, refused): (Vec<_>, Vec<_>) =
            addrs.into_iter().partition(|addr| self.allows(addr.ip()));
        if allowed.is_empty() {
            let refused: Vec<String> = refused.iter().map(|a| a.ip().to_string()).collect();
            return Err(format!(
                "{what} resolves only to non-public addresses ({}), which federation.allow_private_addresses forbids",
                refused.join(", ")
            ));
        }
        Ok(allowed)
    }
}

/// Whether `ip` is a globally routable unicast address: not loopback, private, shared (CGNAT),
/// link-local, unique-local, unspecified, multicast, broadcast, documentation, benchmarking or
/// reserved, nor one of those written in an IPv6 form that embeds an IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = a == 0 // "this network", including the unspecified address
        || a == 10 // RFC 1918
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT), RFC 6598
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local
        || (a == 172 && (16..32).contains(&b)) // RFC 1918
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation (TEST-NET-1)
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 192 && b == 168) // RFC 1918
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation (TEST-NET-2)
        || (a == 203 && b == 0 && c == 113) // documentation (TEST-NET-3)
        || a >= 224; // multicast, reserved and the broadcast address
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // Only 2000::/3 is global unicast; below it are the unspecified and loopback addresses,
    // discard-only and local-use NAT64 prefixes; above it unique-local, link-local, site-local,
    // multicast and unassigned space.
    let refused = !(0x2000..0x4000).contains(&s[0])
        || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments (Teredo, ORCHID …), 2001::/23
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation, 2001:db8::/32
        || (s[0] & 0xfff0) == 0x3ff0; // documentation, 3fff::/20
    !refused
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`, deprecated), IPv4-translated (`::ffff:0:a.b.c.d`), the NAT64 well-known prefix
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::/48`). `::` and `::1` are not IPv4 forms.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, _, _] if !ip.is_unspecified() && !ip.is_loopback() => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().expect("an address"))
    }

    #[test]
    fn refuses_every_non_public_ipv4_range() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.3.4.5",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!public(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn allows_public_ipv4() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "192.169.0.1",
            "198.20.0.1",
            "223.255.255.254",
        ] {
            assert!(public(ip), "{ip} is public");
        }
    }

    #[test]
    fn refuses_every_non_public_ipv6_range() {
        for ip in [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "3fff::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:0:192.168.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "::ffff:255.255.255.255",
        ] {
            assert!(!public(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn allows_public_ipv6_and_public_ipv4_in_ipv6_forms() {
        for ip in [
            "2a00:1450:4001:82a::200e",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(public(ip), "{ip} is public");
        }
    }

    #[test]
    fn the_switch_allows_everything() {
        let policy = AddressPolicy::new(true);
        assert!(policy.allows("127.0.0.1".parse().expect("ip")));
        let policy = AddressPolicy::new(false);
        assert!(!policy.allows("127.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn filter_keeps_public_addresses_and_names_what_it_refused() {
        let policy = AddressPolicy::new(false);
        let addrs = vec![
            "10.0.0.1:8448".parse().expect("addr"),
            "8.8.8.8:8448".parse().expect("addr"),
        ];
        assert_eq!(
            policy.filter("x", addrs),
            Ok(vec!["8.8.8.8:8448".parse().expect("addr")])
        );
        let err = policy
            .filter("x", vec!["[::1]:8448".parse().expect("addr")])
            .expect_err("refused");
        assert!(err.contains("::1"), "{err}");
        assert!(policy.filter("x", Vec::new()).is_err());
    }
}
