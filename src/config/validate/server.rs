//! `[server]`: listen address, TLS, trusted proxies, limits and timeouts.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{Collector, duration};
use crate::config::RawServer;
use crate::config::settings::*;

pub(super) fn validate_server(
    c: &mut Collector<'_>,
    base: &Path,
    raw: RawServer,
) -> Option<ServerSettings> {
    let listen_s = raw.listen.as_deref().unwrap_or("127.0.0.1:8443");
    let listen = match listen_s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            c.push(
                None,
                "server.listen",
                format!("`{listen_s}` is not an address like `127.0.0.1:8443`"),
            );
            None
        }
    };
    let tls = match (raw.tls_cert, raw.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: base.join(cert),
            key: base.join(key),
        }),
        (None, None) => None,
        _ => {
            c.push(
                None,
                "server",
                "`tls_cert` and `tls_key` must be given together",
            );
            None
        }
    };
    if let Some(a) = listen
        && tls.is_none()
        && !a.ip().is_loopback()
    {
        c.push(
            None,
            "server.listen",
            format!("plain HTTP is only allowed on a loopback address, not `{a}`: set `tls_cert` and `tls_key`"),
        );
    }
    let max_body = raw.max_body_bytes.unwrap_or(262_144);
    if max_body == 0 || max_body > 64 * 1024 * 1024 {
        c.push(
            None,
            "server.max_body_bytes",
            "must be between 1 and 67108864",
        );
    }
    let header_read_timeout = duration(
        c,
        "server.header_read_timeout",
        raw.header_read_timeout.as_deref(),
        Duration::from_secs(10),
    );
    let shutdown_grace = duration(
        c,
        "server.shutdown_grace",
        raw.shutdown_grace.as_deref(),
        Duration::from_secs(30),
    );
    let upstream_timeout = duration(
        c,
        "server.upstream_timeout",
        raw.upstream_timeout.as_deref(),
        Duration::from_secs(30),
    );
    let mut trusted_proxies = Vec::new();
    for p in &raw.trusted_proxies {
        match p
            .parse::<ipnet::IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => c.push(
                None,
                "server.trusted_proxies",
                format!("`{p}` is not an address or CIDR range"),
            ),
        }
    }
    Some(ServerSettings {
        trusted_proxies,
        listen: listen?,
        tls,
        max_body_bytes: usize::try_from(max_body).unwrap_or(262_144),
        header_read_timeout,
        shutdown_grace,
        upstream_timeout,
    })
}

/// True for `https://` URLs, and for `http://` URLs on a loopback host.
pub(crate) fn secure_or_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => true,
        (Some("http"), Some(h)) => {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}
