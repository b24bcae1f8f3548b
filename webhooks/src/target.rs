//! Where a webhook may point: an `https` URL whose host is, and resolves only to, public
//! addresses (no loopback, private, link-local, shared, documentation or multicast ones:
//! a webhook must not reach into the network AxonTask runs in). Checked when a webhook is
//! made, and again at each delivery by the resolver the HTTP client connects through, so a
//! name that later resolves elsewhere (DNS rebinding) is refused too.
//! `WEBHOOK_ALLOW_PRIVATE=true` allows `http` and private targets, for development.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// The longest URL accepted.
const MAX_URL: usize = 2048;
/// How long a name may take to resolve.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, 192.0.0.0/24; benchmarking, 198.18.0.0/15.
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let [first, second, third, ..] = ip.segments();
    // 6to4 (2002::/16) carries an IPv4 address: public only if that one is.
    if first == 0x2002 {
        let [a, b] = second.to_be_bytes();
        let [c, d] = third.to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local fc00::/7, link-local fe80::/10, site-local fec0::/10,
        // documentation 2001:db8::/32 and 3fff::/20, Teredo 2001::/32, discard 100::/64,
        // and the IPv4-compatible and NAT64 prefixes that would reach IPv4 space.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        || (first == 0x2001 && (second == 0x0db8 || second == 0))
        || (first & 0xfff0) == 0x3ff0
        || (first == 0x0100 && second == 0 && third == 0)
        || first == 0
        || (first == 0x0064 && second == 0xff9b))
}

/// Checks a webhook URL: its scheme, no credentials in it, and a host that is not a
/// private address. Names are resolved by [`resolve`].
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, String> {
    if raw.len() > MAX_URL {
        return Err(format!("url must be at most {MAX_URL} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("url is not a valid URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => {
            return Err(
                "url must start with https:// (plain http only where the operator set WEBHOOK_ALLOW_PRIVATE=true)".into(),
            );
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "url must not carry credentials; authenticate deliveries by their X-Axon-Signature"
                .into(),
        );
    }
    let literal = match url.host() {
        None => return Err("url must name a host".into()),
        Some(Host::Domain(_)) => None,
        Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
    };
    if let Some(ip) = literal.filter(|ip| !allow_private && !is_public(*ip)) {
        return Err(private(&ip.to_string()));
    }
    Ok(url)
}

fn private(host: &str) -> String {
    format!(
        "{host} is a private, loopback or link-local address; webhooks go to public hosts only (WEBHOOK_ALLOW_PRIVATE=true allows others, for development)"
    )
}

/// The addresses of `host` (port `port`) a delivery may connect to: all of them must be
/// public (a name with any private address is refused whole), unless `allow_private`.
pub async fn resolve(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, String> {
    let lookup = tokio::net::lookup_host((host, port));
    let addrs: Vec<SocketAddr> = tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
        .await
        .map_err(|_| format!("resolving {host} took over {LOOKUP_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no addresses"));
    }
    if !allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(private(host));
    }
    Ok(addrs)
}

/// The resolver deliveries connect through ([`resolve`] for every name).
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly {
    /// `WEBHOOK_ALLOW_PRIVATE`.
    pub allow_private: bool,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs = resolve(name.as_str(), 0, allow_private).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::",
            "2001:0:4136:e378::1",
            "fec0::1",
            "100::1",
        ] {
            assert!(!is_public(ip.parse().expect("an address")), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "2002:101:101::1",
        ] {
            assert!(is_public(ip.parse().expect("an address")), "{ip}");
        }
    }

    #[test]
    fn urls_must_be_https_public_and_without_credentials() {
        assert!(check_url("https://hooks.example.com/axon", false).is_ok());
        for bad in [
            "http://hooks.example.com/axon",
            "ftp://example.com",
            "https://user:pw@example.com/",
            "https://127.0.0.1/hook",
            "https://[::1]/hook",
            "https://169.254.169.254/latest/meta-data",
            "not a url",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:9000/hook", true).is_ok());
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(MAX_URL)), false).is_err());
    }

    #[tokio::test]
    async fn names_that_resolve_to_private_addresses_are_refused() {
        let refused = resolve("localhost", 443, false)
            .await
            .expect_err("loopback");
        assert!(refused.contains("private"), "{refused}");
        assert!(resolve("localhost", 443, true).await.is_ok());
    }
}
