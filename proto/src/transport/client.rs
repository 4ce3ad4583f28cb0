//! Client connections: a `Channel` to a URL with TLS when a CA is configured, the bearer
//! token on every request, and the connect, request and keepalive timeouts.

use super::auth::AttachToken;
use super::{error_chain as chain, Security, Timeouts, TransportError};
use tonic::codegen::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A connection to one server with the token attached to every request; wrap it in a
/// generated client: `CoordinatorClient::new(channel)`. Cheap to clone (clones share it).
pub type ClientChannel = InterceptedService<Channel, AttachToken>;

fn tls_config(ca_pem: &[u8], timeouts: &Timeouts) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .timeout(timeouts.connect)
}

/// Checks that `ca_pem` makes a client TLS configuration.
pub(super) fn check_ca(ca_pem: &[u8], timeouts: &Timeouts) -> Result<(), TransportError> {
    Endpoint::from_static("https://localhost")
        .tls_config(tls_config(ca_pem, timeouts))
        .map(|_| ())
        .map_err(|e| TransportError::Tls {
            what: "CA".into(),
            detail: chain(&e),
        })
}

impl Security {
    /// The URL a client of this process dials for `url`: `https://` when a CA is configured
    /// (an `http://` URL is upgraded), `http://` otherwise; a bare `host:port` gets the
    /// scheme. An `https://` URL without a CA is an error.
    pub fn client_url(&self, url: &str) -> Result<String, TransportError> {
        let url = url.trim();
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if let Some(rest) = url.strip_prefix("https://") {
            if !self.dials_tls() {
                return Err(TransportError::HttpsWithoutCa {
                    url: url.to_string(),
                });
            }
            rest
        } else if url.contains("://") {
            return Err(TransportError::InvalidUrl {
                url: url.to_string(),
                reason: "only http:// and https:// are supported".into(),
            });
        } else {
            url
        };
        if rest.is_empty() {
            return Err(TransportError::InvalidUrl {
                url: url.to_string(),
                reason: "no host: give a URL such as http://10.0.0.2:7000".into(),
            });
        }
        let scheme = if self.dials_tls() { "https" } else { "http" };
        Ok(format!("{scheme}://{rest}"))
    }

    fn endpoint(&self, url: &str) -> Result<(String, Endpoint), TransportError> {
        let url = self.client_url(url)?;
        let t = &self.timeouts;
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| TransportError::InvalidUrl {
                url: url.clone(),
                reason: chain(&e),
            })?
            .connect_timeout(t.connect)
            .timeout(t.request)
            .http2_keep_alive_interval(t.keepalive_interval)
            .keep_alive_timeout(t.keepalive_timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
            .initial_stream_window_size(self.windows.stream)
            .initial_connection_window_size(self.windows.connection)
            .max_frame_size(self.windows.max_frame);
        if let Some(ca) = &self.ca_pem {
            endpoint = endpoint
                .tls_config(tls_config(ca, t))
                .map_err(|e| TransportError::Tls {
                    what: format!("client configuration for {url}"),
                    detail: chain(&e),
                })?;
        }
        Ok((url, endpoint))
    }

    /// Connects to the server at `url` (TCP and, with a CA, the TLS handshake, within the
    /// connect timeout). The channel reconnects by itself if the connection later drops.
    pub async fn channel(&self, url: &str) -> Result<ClientChannel, TransportError> {
        let (url, endpoint) = self.endpoint(url)?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| TransportError::Connect {
                url,
                detail: chain(&e),
            })?;
        Ok(InterceptedService::new(
            channel,
            AttachToken::new(self.token()),
        ))
    }

    /// A channel to `url` that connects on first use (and reconnects as needed): for
    /// peers that may not be up yet. Only the URL and TLS settings are checked here.
    pub fn lazy_channel(&self, url: &str) -> Result<ClientChannel, TransportError> {
        let (_, endpoint) = self.endpoint(url)?;
        Ok(InterceptedService::new(
            endpoint.connect_lazy(),
            AttachToken::new(self.token()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_the_scheme_of_the_configuration() {
        let plain = Security::default();
        assert_eq!(plain.client_url("http://h:1").unwrap(), "http://h:1");
        assert_eq!(plain.client_url(" h:1 ").unwrap(), "http://h:1");
        let err = plain.client_url("https://h:1").unwrap_err();
        assert!(err.to_string().contains("--tls-ca"), "{err}");
        assert!(matches!(
            plain.client_url("ftp://h:1"),
            Err(TransportError::InvalidUrl { .. })
        ));
        assert!(matches!(
            plain.client_url("http://"),
            Err(TransportError::InvalidUrl { .. })
        ));
        let tls = Security {
            ca_pem: Some(Vec::new()),
            ..Default::default()
        };
        assert_eq!(tls.client_url("http://h:1").unwrap(), "https://h:1");
        assert_eq!(tls.client_url("https://h:1").unwrap(), "https://h:1");
        assert_eq!(tls.client_url("h:1").unwrap(), "https://h:1");
    }

    #[test]
    fn a_refused_connection_is_unreachable_and_says_why() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Bind then drop: nothing listens on the port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = rt
            .block_on(Security::default().channel(&format!("http://127.0.0.1:{port}")))
            .unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot connect to http://127.0.0.1:{port}: ")),
            "{text}"
        );
        assert!(
            text.len() > "cannot connect to http://127.0.0.1:1: transport error".len() + 5,
            "{text}"
        );
    }
}
