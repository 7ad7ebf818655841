//! Address policy against server-side request forgery: callbacks go to public addresses only,
//! unless an operator allowlists a subnet.
//!
//! The check runs where addresses are chosen: [`GuardedResolver`] drops refused addresses
//! before the HTTP client sees them, so a name cannot resolve to a public address when
//! checked and to a private one when connected (no DNS-rebinding gap). URLs whose host is an
//! IP literal never reach a resolver; the client checks those with [`AddressPolicy::check`].

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// A class of addresses that callbacks may not reach unless allowlisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16.
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// Carrier-grade NAT shared space, 100.64/10.
    Cgnat,
    /// 224/4, ff00::/8.
    Multicast,
    /// "This network" 0.0.0.0/8, and ::.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// 240/4, the deprecated IPv4-compatible ::/96 and the discard prefix 100::/64.
    Reserved,
    /// 198.18/15.
    Benchmarking,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// IETF protocol assignments, 192.0.0/24.
    IetfProtocol,
    /// IPv4-mapped IPv6 ::ffff:0:0/96 and IPv4-translated ::ffff:0:0:0/96; refused whatever
    /// the IPv4 part.
    Ipv4Mapped,
    /// NAT64 translation prefixes 64:ff9b::/96 and 64:ff9b:1::/48.
    Nat64,
    /// Unique-local fc00::/7.
    UniqueLocal,
    /// Deprecated site-local fec0::/10.
    SiteLocal,
    /// IPv6 transition tunnels that embed an IPv4 address (6to4 2002::/16, Teredo 2001::/32)
    /// and the 6to4 relay anycast 192.88.99/24: a way around the IPv4 checks.
    Tunnel,
}

impl AddressClass {
    /// A short human name: "loopback", "private", "link-local", ...
    pub fn name(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::Cgnat => "CGNAT shared",
            Self::Multicast => "multicast",
            Self::Unspecified => "unspecified (\"this network\")",
            Self::Broadcast => "broadcast",
            Self::Reserved => "reserved",
            Self::Benchmarking => "benchmarking",
            Self::Documentation => "documentation",
            Self::IetfProtocol => "IETF protocol assignment",
            Self::Ipv4Mapped => "IPv4-mapped IPv6",
            Self::Nat64 => "NAT64",
            Self::UniqueLocal => "unique-local",
            Self::SiteLocal => "site-local",
            Self::Tunnel => "IPv6 transition tunnel",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    use AddressClass::*;
    const TABLE: &[([u8; 4], u32, AddressClass)] = &[
        ([0, 0, 0, 0], 8, Unspecified),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, Cgnat),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, IetfProtocol),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, Tunnel),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([255, 255, 255, 255], 32, Broadcast),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    use AddressClass::*;
    const TABLE: &[([u16; 8], u32, AddressClass)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 0], 128, Unspecified),
        ([0, 0, 0, 0, 0, 0, 0, 1], 128, Loopback),
        ([0, 0, 0, 0, 0, 0xffff, 0, 0], 96, Ipv4Mapped),
        ([0, 0, 0, 0, 0xffff, 0, 0, 0], 96, Ipv4Mapped),
        ([0, 0, 0, 0, 0, 0, 0, 0], 96, Reserved),
        ([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, Nat64),
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, Nat64),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Reserved),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Documentation),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, Tunnel),
        ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, Tunnel),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Documentation),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, UniqueLocal),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, SiteLocal),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Multicast),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
}

/// The non-public class `ip` belongs to, or `None` for a public address.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Why an address may not be contacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{addr} ({class} address)")]
pub struct Refusal {
    /// The refused address.
    pub addr: IpAddr,
    /// Its class.
    pub class: AddressClass,
}

/// Which addresses callbacks may reach: every public address, plus non-public ones inside an
/// allowlisted subnet. IPv4-mapped IPv6 addresses are always refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Subnets admitted even though they are not public (e.g. `127.0.0.0/8` for tests,
    /// `10.20.0.0/16` for an internal receiver).
    pub allow: Vec<IpNet>,
}

impl AddressPolicy {
    /// A policy admitting public addresses and the `allow` subnets.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// Ok if `ip` may be contacted.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let class = classify(ip);
        if class == Some(AddressClass::Ipv4Mapped) {
            return Err(Refusal {
                addr: ip,
                class: AddressClass::Ipv4Mapped,
            });
        }
        match class {
            Some(class) if !self.allow.iter().any(|net| net.contains(&ip)) => {
                Err(Refusal { addr: ip, class })
            }
            _ => Ok(()),
        }
    }
}

/// A name resolution that produced no usable address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Every address the name resolved to is refused by the policy.
    #[error("refused: {host} resolves only to {}", list(.refusals))]
    Refused {
        /// The name.
        host: String,
        /// Each refused address with its class.
        refusals: Vec<Refusal>,
    },
    /// The lookup itself failed.
    #[error("cannot resolve {host}: {source}")]
    Lookup {
        /// The name.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The lookup succeeded with no addresses.
    #[error("cannot resolve {host}: no addresses")]
    NoAddresses {
        /// The name.
        host: String,
    },
}

fn list(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(Refusal::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `reqwest` resolver that looks names up (or takes them from a static override map) and
/// keeps only the addresses the [`AddressPolicy`] admits.
#[derive(Debug, Clone, Default)]
pub struct GuardedResolver {
    policy: AddressPolicy,
    overrides: HashMap<String, Vec<IpAddr>>,
}

fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl GuardedResolver {
    /// A resolver enforcing `policy`; names in `overrides` (case-insensitive) resolve to the
    /// given addresses without a DNS query — and those addresses are checked like any other.
    pub fn new(policy: AddressPolicy, overrides: HashMap<String, Vec<IpAddr>>) -> Self {
        let overrides = overrides
            .into_iter()
            .map(|(name, addrs)| (normalize(&name), addrs))
            .collect();
        Self { policy, overrides }
    }

    /// The policy this resolver enforces.
    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// Resolves `host` to the addresses the policy admits, in resolver order.
    pub async fn resolve_host(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let key = normalize(host);
        let found: Vec<IpAddr> = match self.overrides.get(&key) {
            Some(addrs) => addrs.clone(),
            None => tokio::net::lookup_host((key.as_str(), 0))
                .await
                .map_err(|source| ResolveError::Lookup {
                    host: key.clone(),
                    source,
                })?
                .map(|addr| addr.ip())
                .collect(),
        };
        if found.is_empty() {
            return Err(ResolveError::NoAddresses { host: key });
        }
        let mut admitted = Vec::new();
        let mut refusals = Vec::new();
        for ip in found {
            match self.policy.check(ip) {
                Ok(()) if !admitted.contains(&ip) => admitted.push(ip),
                Ok(()) => {}
                Err(refusal) if !refusals.contains(&refusal) => refusals.push(refusal),
                Err(_) => {}
            }
        }
        if admitted.is_empty() {
            return Err(ResolveError::Refused {
                host: key,
                refusals,
            });
        }
        if !refusals.is_empty() {
            tracing::debug!(host = %key, refused = %list(&refusals), "dropped refused addresses");
        }
        Ok(admitted)
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = this.resolve_host(&host).await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    fn class_of(ip: &str) -> Option<AddressClass> {
        AddressPolicy::default()
            .check(ip.parse().unwrap())
            .err()
            .map(|r| r.class)
    }

    #[test]
    fn refuses_every_non_public_ipv4_class() {
        let cases = [
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.5", Private),
            ("10.255.255.255", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("169.254.169.254", LinkLocal),
            ("100.64.0.1", Cgnat),
            ("100.127.255.255", Cgnat),
            ("224.0.0.1", Multicast),
            ("239.255.255.255", Multicast),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("255.255.255.254", Reserved),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("192.0.0.8", IetfProtocol),
            ("192.88.99.1", Tunnel),
        ];
        for (ip, class) in cases {
            assert_eq!(class_of(ip), Some(class), "{ip}");
        }
    }

    #[test]
    fn refuses_every_non_public_ipv6_class() {
        let cases = [
            ("::1", Loopback),
            ("::", Unspecified),
            ("::ffff:127.0.0.1", Ipv4Mapped),
            ("::ffff:8.8.8.8", Ipv4Mapped),
            ("::127.0.0.1", Reserved),
            ("100::1", Reserved),
            ("64:ff9b::a00:5", Nat64),
            ("64:ff9b:1::1", Nat64),
            ("2001:db8::1", Documentation),
            ("3fff:fff::1", Documentation),
            ("2002:7f00:1::1", Tunnel),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Tunnel),
            ("::ffff:0:7f00:1", Ipv4Mapped),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", SiteLocal),
            ("ff02::1", Multicast),
        ];
        for (ip, class) in cases {
            assert_eq!(class_of(ip), Some(class), "{ip}");
        }
    }

    #[test]
    fn admits_public_addresses_next_to_the_boundaries() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.255",
            "192.0.3.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "203.0.112.255",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2001:db9::1",
            "64:ff9b:2::1",
            "fbff::1",
            "fe7f::1",
            "2001:1::1",
            "2003::1",
            "3fff:1000::1",
            "192.88.98.255",
            "192.88.100.0",
        ] {
            assert_eq!(class_of(ip), None, "{ip}");
        }
    }

    #[test]
    fn allowlist_admits_its_subnets_only() {
        let policy = AddressPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.20.0.0/16".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        for ip in ["127.0.0.1", "127.1.2.3", "10.20.3.4", "fd00::5", "8.8.8.8"] {
            assert_eq!(policy.check(ip.parse().unwrap()), Ok(()), "{ip}");
        }
        for (ip, class) in [
            ("10.21.0.1", Private),
            ("::1", Loopback),
            ("192.168.0.1", Private),
            ("fc00::1", UniqueLocal),
        ] {
            assert_eq!(
                policy.check(ip.parse().unwrap()).unwrap_err().class,
                class,
                "{ip}"
            );
        }
    }

    #[test]
    fn ipv4_mapped_is_refused_even_when_allowlisted() {
        let policy = AddressPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::ffff:0:0/96".parse().unwrap(),
        ]);
        let refusal = policy
            .check("::ffff:127.0.0.1".parse().unwrap())
            .unwrap_err();
        assert_eq!(refusal.class, Ipv4Mapped);
        assert_eq!(
            refusal.to_string(),
            "::ffff:127.0.0.1 (IPv4-mapped IPv6 address)"
        );
    }

    #[tokio::test]
    async fn resolver_refuses_overridden_private_names_with_a_reason() {
        let overrides = HashMap::from([
            (
                "Internal.Test".to_owned(),
                vec!["10.0.0.5".parse().unwrap()],
            ),
            (
                "mixed.test".to_owned(),
                vec![
                    "10.0.0.5".parse().unwrap(),
                    "93.184.216.34".parse().unwrap(),
                ],
            ),
            ("empty.test".to_owned(), vec![]),
        ]);
        let resolver = GuardedResolver::new(AddressPolicy::default(), overrides);
        let err = resolver.resolve_host("internal.test.").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "refused: internal.test resolves only to 10.0.0.5 (private address)"
        );
        assert_eq!(
            resolver.resolve_host("MIXED.test").await.unwrap(),
            vec!["93.184.216.34".parse::<IpAddr>().unwrap()]
        );
        assert!(matches!(
            resolver.resolve_host("empty.test").await,
            Err(ResolveError::NoAddresses { .. })
        ));
    }

    #[tokio::test]
    async fn resolver_checks_real_lookups() {
        let resolver = GuardedResolver::new(AddressPolicy::default(), HashMap::new());
        let err = resolver.resolve_host("localhost").await.unwrap_err();
        assert!(err.to_string().contains("(loopback address)"), "{err}");
        let allowed = GuardedResolver::new(
            AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]),
            HashMap::new(),
        );
        assert!(
            allowed
                .resolve_host("localhost")
                .await
                .unwrap()
                .iter()
                .all(|ip| ip.is_loopback() && ip.is_ipv4())
        );
    }
}
