//! Download a provider feed over HTTPS, through `HTTPS_PROXY` when it is set: the fetch half of
//! `update-ranges` (validation and the atomic write are in [`super::cloud`]).
//!
//! One GET per URL over HTTP/1.1 and rustls (the webpki roots, plus any extra CA file), with a
//! bounded body, up to five redirects, and one deadline over the whole exchange. A proxy is
//! used through `CONNECT` (`HTTPS_PROXY` or `https_proxy`, `http://host:port`), except for hosts
//! that `NO_PROXY` / `no_proxy` names (`*`, a host, or a domain suffix).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest feed accepted (Azure's service tags are about 5 MB).
pub const MAX_BODY: usize = 64 << 20;
const MAX_REDIRECTS: usize = 5;

/// How to reach the feeds.
#[derive(Clone)]
pub struct Fetcher {
    tls: TlsConnector,
    proxy: Option<(String, u16)>,
    no_proxy: Vec<String>,
    timeout: Duration,
}

impl Fetcher {
    /// A fetcher trusting the webpki roots and the certificates of `ca_file`, with the proxy
    /// settings of the environment, each download limited to `timeout`.
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Fetcher, String> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: no certificate", path.display()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let env = |a: &str, b: &str| {
            std::env::var(a)
                .ok()
                .or_else(|| std::env::var(b).ok())
                .filter(|v| !v.trim().is_empty())
        };
        let proxy = match env("HTTPS_PROXY", "https_proxy") {
            Some(p) => Some(parse_proxy(&p)?),
            None => None,
        };
        let no_proxy = env("NO_PROXY", "no_proxy")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().trim_start_matches('.').to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Fetcher {
            tls: TlsConnector::from(Arc::new(config)),
            proxy,
            no_proxy,
            timeout,
        })
    }

    /// The proxy in use for `host`, if any.
    pub fn proxy_for(&self, host: &str) -> Option<&(String, u16)> {
        let host = host.to_ascii_lowercase();
        let bypass = self
            .no_proxy
            .iter()
            .any(|n| n == "*" || host == *n || host.ends_with(&format!(".{n}")));
        if bypass { None } else { self.proxy.as_ref() }
    }

    /// GET `url` and return its body; redirects are followed. The whole exchange, redirects
    /// included, must finish within the timeout.
    pub async fn get(&self, url: &str) -> Result<Bytes, String> {
        match tokio::time::timeout(self.timeout, self.get_following(url)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{url}: no complete answer within {:.0?}",
                self.timeout
            )),
        }
    }

    async fn get_following(&self, url: &str) -> Result<Bytes, String> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            match self.get_once(&url).await? {
                Answer::Body(b) => return Ok(b),
                Answer::Redirect(next) => url = next,
            }
        }
        Err(format!("{url}: more than {MAX_REDIRECTS} redirects"))
    }

    async fn get_once(&self, url: &str) -> Result<Answer, String> {
        let fail = |e: &dyn std::fmt::Display| format!("{url}: {e}");
        let uri: Uri = url.parse().map_err(|e| fail(&e))?;
        if uri.scheme_str() != Some("https") {
            return Err(fail(&"only https:// feeds are fetched"));
        }
        let host = uri.host().ok_or_else(|| fail(&"no host"))?.to_string();
        let port = uri.port_u16().unwrap_or(443);
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tcp = match self.proxy_for(&bare) {
            Some((ph, pp)) => connect_via(ph, *pp, &host, port)
                .await
                .map_err(|e| fail(&format!("proxy {ph}:{pp}: {e}")))?,
            None => TcpStream::connect((bare.as_str(), port))
                .await
                .map_err(|e| fail(&e))?,
        };
        let name = ServerName::try_from(bare.clone()).map_err(|e| fail(&e))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| fail(&format!("TLS: {e}")))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| fail(&e))?;
        let driver = tokio::spawn(conn);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = if port == 443 {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(
                hyper::header::USER_AGENT,
                concat!(
                    "residency-proxy/",
                    env!("CARGO_PKG_VERSION"),
                    " update-ranges"
                ),
            )
            .header(hyper::header::ACCEPT_ENCODING, "identity")
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(&e))?;
        let resp = send.send_request(req).await.map_err(|e| fail(&e))?;
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| fail(&format!("{status} without a Location")))?;
            driver.abort();
            return Ok(Answer::Redirect(resolve(&uri, location)));
        }
        if !status.is_success() {
            driver.abort();
            return Err(fail(&format!("HTTP {status}")));
        }
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| fail(&format!("body cut short or too large: {e}")))?
            .to_bytes();
        driver.abort();
        Ok(Answer::Body(body))
    }
}

enum Answer {
    Body(Bytes),
    Redirect(String),
}

/// A redirect target relative to `base`.
fn resolve(base: &Uri, location: &str) -> String {
    if location.starts_with("https://") || location.starts_with("http://") {
        return location.to_string();
    }
    let authority = base.authority().map_or("", |a| a.as_str());
    if location.starts_with('/') {
        format!("https://{authority}{location}")
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("https://{authority}{dir}{location}")
    }
}

/// `http://host:port` (a trailing `/` allowed; no credentials).
fn parse_proxy(text: &str) -> Result<(String, u16), String> {
    let bad = || format!("HTTPS_PROXY '{text}': expected http://host:port");
    let rest = text
        .trim()
        .strip_prefix("http://")
        .ok_or_else(bad)?
        .trim_end_matches('/');
    if rest.contains('@') {
        return Err(format!(
            "HTTPS_PROXY '{text}': proxy credentials are not supported"
        ));
    }
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// A TCP stream to `host:port` through an HTTP proxy's `CONNECT`.
async fn connect_via(
    proxy_host: &str,
    proxy_port: u16,
    host: &str,
    port: u16,
) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect((proxy_host, proxy_port)).await?;
    let target = format!("{host}:{port}");
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    // Read the proxy's answer head byte by byte, so nothing of the tunnel is consumed.
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return Err(std::io::Error::other("CONNECT answer head too long"));
        }
        let b = s.read_u8().await?;
        head.push(b);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        let line = text.lines().next().unwrap_or("").to_string();
        return Err(std::io::Error::other(format!("CONNECT refused: {line}")));
    }
    Ok(s)
}

/// Azure's download page links the current `ServiceTags_Public_YYYYMMDD.json`: its address.
pub fn azure_link(page: &str) -> Option<String> {
    let start = page.find("https://download.microsoft.com/download/")?;
    let rest = &page[start..];
    let end = rest.find(".json")? + ".json".len();
    let link = &rest[..end];
    (link.contains("ServiceTags_Public") && !link.contains(['"', '\'', '<', ' ']))
        .then(|| link.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_settings_parse() {
        assert_eq!(
            parse_proxy("http://127.0.0.1:3128/"),
            Ok(("127.0.0.1".to_string(), 3128))
        );
        assert!(parse_proxy("127.0.0.1:3128").is_err());
        assert!(parse_proxy("http://u:p@h:1").is_err());
        assert!(parse_proxy("http://h").is_err());
    }

    #[test]
    fn redirects_resolve_against_the_base() {
        let base: Uri = "https://a.example/x/y.json".parse().expect("uri");
        assert_eq!(resolve(&base, "/z"), "https://a.example/z");
        assert_eq!(resolve(&base, "z.json"), "https://a.example/x/z.json");
        assert_eq!(resolve(&base, "https://b.example/"), "https://b.example/");
    }

    #[test]
    fn azure_download_link_is_found() {
        let page = r#"<a href="https://download.microsoft.com/download/7/1/d/71d86715-5596-4529-9b13-da13a5de5b63/ServiceTags_Public_20261102.json" class="x">"#;
        assert_eq!(
            azure_link(page).as_deref(),
            Some(
                "https://download.microsoft.com/download/7/1/d/71d86715-5596-4529-9b13-da13a5de5b63/ServiceTags_Public_20261102.json"
            )
        );
        assert_eq!(azure_link("<html>nothing</html>"), None);
    }
}
