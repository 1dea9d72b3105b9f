//! HTTPS for the simulator, so mTLS and private CAs are tested end to end: a server certificate
//! and key (PEM files), and optionally a CA whose client certificates it requires, as DigiCert
//! ONE's `clientauth.` hosts do. A client certificate the verifier accepted stands in for the API
//! key on DigiCert ONE routes; a connection without one (or with one from another CA) fails its
//! handshake with a TLS alert. Each connection is its own task: a slow or failed handshake never
//! holds up another.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use super::http::{router, ClientCertVerified};
use super::Simulator;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS configuration from PEM files: the server's certificate chain and key, and the CA that
/// must have issued every client certificate (`None`: no client certificate asked for).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: no private key: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--client-ca {}: {e}", path.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("--client-ca {}: {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("--client-ca {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "--client-ca {}: no certificate in it",
                    path.display()
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--client-ca {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    // Served with hyper's HTTP/1 (like the plain listener).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How long a refused client may go on sending before its connection is dropped.
const LINGER: Duration = Duration::from_secs(2);

/// Close a connection whose handshake failed (the alert is already sent) without a reset: in
/// TLS 1.3 the client sends its request right behind its certificate, and closing a socket with
/// unread data sends an RST that can overtake the alert. So stop writing, then read and drop
/// what the client still sends until it closes, for at most [`LINGER`].
async fn linger(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut buf = [0u8; 4096];
    let drain = async {
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Serve both APIs and `/_sim/*` over HTTPS on `listener` until `shutdown` completes.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    sim: Arc<Simulator>,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let app = router(sim.clone());
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // E.g. out of file descriptors: wait a little rather than spin.
                    tracing::warn!(event = "sim_accept_failed", error = %e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        sim.count_tls_connection();
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let handshake = acceptor.accept(tcp).into_fallible();
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(s)) => s,
                Ok(Err((e, tcp))) => {
                    tracing::info!(event = "sim_tls_handshake_failed", error = %e);
                    linger(tcp).await;
                    return;
                }
                Err(_) => return,
            };
            // With --client-ca, rustls only completes handshakes whose certificate it verified.
            let verified = stream
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            let app = if verified {
                app.layer(Extension(ClientCertVerified))
            } else {
                app
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(event = "sim_connection_error", error = %e);
            }
        });
    }
}
