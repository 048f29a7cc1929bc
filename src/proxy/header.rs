//! The PROXY protocol header (HAProxy's spec, `--proxy-protocol v1|v2`) that starts every
//! upstream connection, so that a worker learns the client's address and port, and the
//! address the client connected to. Encoded by the `ppp` crate (the maintained
//! implementation of both versions); this module only picks the family.
//!
//! A client of a dual-stack listener (`--host ::`) that came over IPv4 has IPv4-mapped IPv6
//! addresses on both ends: they are written as `TCP4`, which is what the client used.

use std::net::{IpAddr, SocketAddr};

use ppp::v2::{Builder, Command, Protocol, Version};

use crate::config::ProxyProtocol;

/// `address` with an IPv4-mapped IPv6 address as the IPv4 address.
fn unmapped(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), address.port()),
            None => address,
        },
        IpAddr::V4(_) => address,
    }
}

/// Both as IPv6 (IPv4 mapped) when their families differ.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |address: SocketAddr| match address.ip() {
        IpAddr::V4(v4) => SocketAddr::new(v4.to_ipv6_mapped().into(), address.port()),
        IpAddr::V6(_) => address,
    };
    if source.is_ipv4() == destination.is_ipv4() {
        (source, destination)
    } else {
        (v6(source), v6(destination))
    }
}

/// The header for a connection from `client` to `local` (the cluster's address it reached);
/// empty with `off`.
pub fn encode(protocol: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (source, destination) = same_family(unmapped(client), unmapped(local));
    match protocol {
        ProxyProtocol::Off => Vec::new(),
        ProxyProtocol::V1 => {
            let addresses = match (source, destination) {
                (SocketAddr::V4(source), SocketAddr::V4(destination)) => {
                    ppp::v1::Addresses::new_tcp4(
                        *source.ip(),
                        *destination.ip(),
                        source.port(),
                        destination.port(),
                    )
                }
                (SocketAddr::V6(source), SocketAddr::V6(destination)) => {
                    ppp::v1::Addresses::new_tcp6(
                        *source.ip(),
                        *destination.ip(),
                        source.port(),
                        destination.port(),
                    )
                }
                _ => unreachable!("same_family"),
            };
            addresses.to_string().into_bytes()
        }
        ProxyProtocol::V2 => Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (source, destination),
        )
        .build()
        // Only a header longer than 64 KiB (TLVs) cannot be built.
        .unwrap_or_default(),
    }
}

/// The header of a connection the proxy makes on its own (the readiness probe), which relays
/// no client: v2's `LOCAL` command, v1's `UNKNOWN`; empty with `off`.
pub fn local(protocol: ProxyProtocol) -> Vec<u8> {
    match protocol {
        ProxyProtocol::Off => Vec::new(),
        ProxyProtocol::V1 => ppp::v1::Addresses::Unknown.to_string().into_bytes(),
        ProxyProtocol::V2 => Builder::with_addresses(
            Version::Two | Command::Local,
            Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn version_1_is_the_text_line() {
        let header = encode(
            ProxyProtocol::V1,
            address("192.0.2.7:51234"),
            address("10.0.0.1:8000"),
        );
        assert_eq!(header, b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 8000\r\n");
        let header = encode(
            ProxyProtocol::V1,
            address("[2001:db8::7]:51234"),
            address("[::1]:8000"),
        );
        assert_eq!(header, b"PROXY TCP6 2001:db8::7 ::1 51234 8000\r\n");
        // IPv4 through a dual-stack listener: TCP4, as the client spoke.
        let header = encode(
            ProxyProtocol::V1,
            address("[::ffff:192.0.2.7]:51234"),
            address("[::ffff:10.0.0.1]:8000"),
        );
        assert_eq!(header, b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 8000\r\n");
        assert_eq!(
            encode(
                ProxyProtocol::Off,
                address("1.2.3.4:1"),
                address("1.2.3.4:2")
            ),
            b""
        );
    }

    #[test]
    fn a_connection_of_the_proxys_own_says_local_or_unknown() {
        assert_eq!(local(ProxyProtocol::V1), b"PROXY UNKNOWN\r\n");
        let mut expected = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        expected.extend([0x20, 0x00, 0, 0]);
        assert_eq!(local(ProxyProtocol::V2), expected);
        assert_eq!(local(ProxyProtocol::Off), b"");
    }

    #[test]
    fn version_2_is_the_binary_header() {
        let header = encode(
            ProxyProtocol::V2,
            address("192.0.2.7:51234"),
            address("10.0.0.1:8000"),
        );
        let mut expected = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        // Version 2, PROXY; TCP over IPv4; 12 bytes of addresses.
        expected.extend([0x21, 0x11, 0, 12]);
        expected.extend([192, 0, 2, 7, 10, 0, 0, 1]);
        expected.extend(51234u16.to_be_bytes());
        expected.extend(8000u16.to_be_bytes());
        assert_eq!(header, expected);
        let header = encode(
            ProxyProtocol::V2,
            address("[2001:db8::7]:1"),
            address("[::1]:2"),
        );
        assert_eq!(&header[12..16], [0x21, 0x21, 0, 36]);
        assert_eq!(header.len(), 16 + 36);
        assert_eq!(header[16..18], [0x20, 0x01]);
        assert_eq!(header[16 + 31], 1, "the destination ::1");
        assert_eq!(header[48..52], [0, 1, 0, 2], "the ports");
    }
}
