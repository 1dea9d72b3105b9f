//! TLS and proxies for every outgoing client: the DigiCert clients ([`super::Client`]) and the
//! alert sinks' (`alert::sinks::http_client`). [`configure`] applies `tls_roots`, `ca_file` and
//! the proxy to a `reqwest` builder; [`load_client_cert`] reads an mTLS identity and refuses one
//! that cannot work (expired, not yet valid, a key that is not the certificate's) before any
//! handshake; [`explain`] turns a failed handshake into a sentence that says what to fix.
//!
//! Certificate validity is judged on the system clock, as the TLS peer judges it, never on the
//! pinned domain clock (`crate::clock`): a certificate is expired when the server will say so.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError};
use url::Url;

use super::settings::{Account, Credential, ProxyServer, ProxySetting, TlsRoots, TlsSettings};

/// `check` warns, collections log a warning and `/metrics` lets monitoring alert this many days
/// before a client certificate expires: an expired one stops collection like an expired
/// service user.
pub const EXPIRY_WARNING_DAYS: u64 = 30;

/// What a client trusts and presents, kept for messages and for `check`.
#[derive(Debug, Clone, Default)]
pub struct TlsContext {
    /// The trust anchors in words, e.g. "the built-in public roots and ca_file /etc/corp.pem".
    pub roots: String,
    pub client_cert: Option<ClientCertInfo>,
    /// The proxy in words (never its password), or `None` when requests go direct.
    pub proxy: Option<String>,
}

/// A loaded mTLS client certificate.
#[derive(Debug, Clone)]
pub struct ClientCertInfo {
    pub file: PathBuf,
    /// The subject, e.g. `CN=auditwarden,O=Example`.
    pub subject: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl ClientCertInfo {
    /// Whole days left until `not_after` (0 when less than a day is left or it has passed).
    pub fn days_left(&self, now: SystemTime) -> u64 {
        let left = self.not_after.timestamp() - unix_secs(now);
        u64::try_from(left).unwrap_or(0) / 86_400
    }

    /// A warning when the certificate expires within [`EXPIRY_WARNING_DAYS`].
    pub fn expiry_warning(&self, now: SystemTime) -> Option<String> {
        let left = self.not_after.timestamp() - unix_secs(now);
        if left > (EXPIRY_WARNING_DAYS * 86_400) as i64 {
            return None;
        }
        Some(format!(
            "the client certificate {} ({}) expires on {} (in {} days): renew it before collection stops",
            self.file.display(),
            self.subject,
            fmt_time(self.not_after),
            self.days_left(now)
        ))
    }
}

impl TlsContext {
    /// `check`'s TLS lines for an account whose call to `base` succeeded: the server was trusted
    /// and, with mTLS, the client certificate accepted (no API key was sent).
    pub fn report(&self, base: &Url, now: SystemTime) -> Vec<String> {
        let mut lines = Vec::new();
        if base.scheme() == "https" {
            lines.push(format!(
                "tls: server certificate of {} trusted ({})",
                host_port(base),
                self.roots
            ));
        }
        if let Some(c) = &self.client_cert {
            lines.push(format!(
                "tls: client certificate {} ({}) accepted, valid until {} ({} days left)",
                c.file.display(),
                c.subject,
                fmt_time(c.not_after),
                c.days_left(now)
            ));
            if let Some(w) = c.expiry_warning(now) {
                lines.push(format!("WARNING: {w}"));
            }
        }
        if let Some(p) = &self.proxy {
            lines.push(format!("proxy: {p}"));
        }
        lines
    }
}

/// Apply `tls_roots`, `ca_file` and the proxy to `builder`. Returns the builder and the trust
/// anchors and proxy in words (for messages). Reads `ca_file` (and, for `tls_roots = "system"`,
/// the operating system's store): a few small local files.
pub fn configure(
    builder: reqwest::ClientBuilder,
    tls: &TlsSettings,
    proxy: &ProxySetting,
    target: Option<&Url>,
) -> Result<(reqwest::ClientBuilder, TlsContext), String> {
    let mut b = builder.tls_built_in_root_certs(tls.roots == TlsRoots::Builtin);
    let mut roots = match tls.roots {
        TlsRoots::Builtin => "the built-in public roots".to_string(),
        TlsRoots::System => {
            let certs = system_roots()?;
            let n = certs.len();
            for c in certs {
                b = b.add_root_certificate(c);
            }
            format!("the operating system's store ({n} roots)")
        }
    };
    if let Some(path) = &tls.ca_file {
        for c in ca_file_roots(path)? {
            b = b.add_root_certificate(c);
        }
        roots.push_str(&format!(" and ca_file {}", path.display()));
    }
    let (b, proxy) = apply_proxy(b, proxy, target)?;
    Ok((
        b,
        TlsContext {
            roots,
            client_cert: None,
            proxy,
        },
    ))
}

/// The roots of the operating system's store (what `rustls-native-certs` finds: `SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, or the distribution's bundle), keeping those rustls can use as anchors (stores
/// often hold a few ancient certificates that it cannot parse).
fn system_roots() -> Result<Vec<reqwest::Certificate>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = rustls::RootCertStore::empty();
    let mut out = Vec::new();
    for der in found.certs {
        if store.add(der.clone()).is_ok() {
            if let Ok(c) = reqwest::Certificate::from_der(&der) {
                out.push(c);
            }
        }
    }
    if out.is_empty() {
        let why = found
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(format!(
            "tls_roots = \"system\": the operating system's certificate store has no usable root{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            }
        ));
    }
    Ok(out)
}

/// Every certificate of a `ca_file`, each checked as a trust anchor.
fn ca_file_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    let mut store = rustls::RootCertStore::empty();
    for (i, der) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let der = der.map_err(|e| {
            format!(
                "ca_file {}: certificate {} is not valid PEM: {e}",
                path.display(),
                i + 1
            )
        })?;
        store.add(der.clone()).map_err(|e| {
            format!(
                "ca_file {}: certificate {} cannot be a trust anchor: {e}",
                path.display(),
                i + 1
            )
        })?;
        let c = reqwest::Certificate::from_der(&der)
            .map_err(|e| format!("ca_file {}: certificate {}: {e}", path.display(), i + 1))?;
        out.push(c);
    }
    if out.is_empty() {
        return Err(format!(
            "ca_file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(out)
}

/// Proxies are set here only: reqwest's own reading of the environment is switched off, so what
/// `check` reports is what requests do.
fn apply_proxy(
    b: reqwest::ClientBuilder,
    proxy: &ProxySetting,
    target: Option<&Url>,
) -> Result<(reqwest::ClientBuilder, Option<String>), String> {
    let b = b.no_proxy();
    match proxy {
        ProxySetting::Direct => Ok((b, None)),
        ProxySetting::Explicit(p) => {
            let proxy = with_auth(reqwest::Proxy::all(p.url.as_str()), p)?;
            Ok((b.proxy(proxy), Some(describe_proxy(p, None))))
        }
        ProxySetting::Environment(env) => {
            let no_proxy = env
                .no_proxy
                .as_deref()
                .and_then(reqwest::NoProxy::from_string);
            let mut b = b;
            let mut used = None;
            for (p, https) in [(&env.https, true), (&env.http, false)] {
                let Some(p) = p else { continue };
                let r = if https {
                    reqwest::Proxy::https(p.url.as_str())
                } else {
                    reqwest::Proxy::http(p.url.as_str())
                };
                b = b.proxy(with_auth(r, p)?.no_proxy(no_proxy.clone()));
                if target.is_some_and(|t| (t.scheme() == "https") == https) {
                    used = Some(describe_proxy(p, env.no_proxy.as_deref()));
                }
            }
            Ok((b, used))
        }
    }
}

fn with_auth(
    r: reqwest::Result<reqwest::Proxy>,
    p: &ProxyServer,
) -> Result<reqwest::Proxy, String> {
    // The URL has no credentials (config keeps them apart), so the error cannot show one.
    let proxy = r.map_err(|e| format!("the proxy {} ({}): {e}", p.url, p.source))?;
    Ok(match &p.username {
        Some(user) => proxy.basic_auth(user, p.password.as_ref().map_or("", |s| s.expose())),
        None => proxy,
    })
}

fn describe_proxy(p: &ProxyServer, no_proxy: Option<&str>) -> String {
    let mut s = format!("{} (from {}", host_port(&p.url), p.source);
    if let Some(u) = &p.username {
        s.push_str(&format!(", user {u}"));
    }
    if let Some(n) = no_proxy {
        s.push_str(&format!("; NO_PROXY {n:?} bypasses it"));
    }
    s.push(')');
    format!("{}://{s}", p.url.scheme())
}

/// Read an mTLS identity: a PEM file holding the client certificate (then any intermediates) and
/// its private key. Refuses, naming the file, a certificate that is expired or not valid yet on
/// the system clock, and a key that does not belong to the certificate.
pub fn load_client_cert(
    path: &Path,
    now: SystemTime,
) -> Result<(reqwest::Identity, ClientCertInfo), String> {
    let file = path.display();
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read client_cert_file {file}: {e}"))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("client_cert_file {file}: a certificate is not valid PEM: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err(format!(
            "client_cert_file {file} holds no certificate (-----BEGIN CERTIFICATE-----)"
        ));
    };
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        format!("client_cert_file {file} holds no private key (-----BEGIN PRIVATE KEY-----, RSA or EC): the certificate and its key go in one file")
    })?;
    let info = cert_info(path, leaf)?;
    if unix_secs(now) > info.not_after.timestamp() {
        return Err(format!(
            "the client certificate {file} ({}) expired on {}: renew it (the server refuses an expired certificate)",
            info.subject,
            fmt_time(info.not_after)
        ));
    }
    if unix_secs(now) < info.not_before.timestamp() {
        return Err(format!(
            "the client certificate {file} ({}) is not valid before {} (is this machine's clock right?)",
            info.subject,
            fmt_time(info.not_before)
        ));
    }
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("client_cert_file {file}: the private key cannot be used: {e}"))?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signer);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(format!(
                "client_cert_file {file}: the private key does not belong to the certificate ({}): put the certificate and its own key in the file",
                info.subject
            ))
        }
        // The key type cannot say its public key: the server will judge.
        Err(_) => {}
    }
    let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
        format!("client_cert_file {file} is not a PEM certificate with its key: {e}")
    })?;
    Ok((identity, info))
}

fn cert_info(path: &Path, der: &CertificateDer<'_>) -> Result<ClientCertInfo, String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der.as_ref()).map_err(|e| {
        format!(
            "client_cert_file {}: the certificate cannot be read: {e}",
            path.display()
        )
    })?;
    let v = &cert.tbs_certificate.validity;
    let at = |t: x509_cert::time::Time| {
        DateTime::<Utc>::from_timestamp(t.to_unix_duration().as_secs() as i64, 0)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    };
    Ok(ClientCertInfo {
        file: path.to_path_buf(),
        subject: cert.tbs_certificate.subject.to_string(),
        not_before: at(v.not_before),
        not_after: at(v.not_after),
    })
}

/// The sentence for a failed request whose cause is TLS or the proxy tunnel, or `None` when it is
/// something else (left to the client's general mapping, which also explains plain HTTP on an
/// https URL). `base` is the server the request went to.
pub fn explain(err: &(dyn StdError + 'static), ctx: &TlsContext, base: &Url) -> Option<String> {
    let server = host_port(base);
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    // Error chains are short; the bound only guards against a cycle.
    for _ in 0..32 {
        let e = cur?;
        if let Some(r) = rustls_error(e) {
            return describe_rustls(r, ctx, &server);
        }
        // hyper-util's tunnel error for a 407 answer to CONNECT (its type is private).
        if e.to_string().ends_with("proxy authorization required") {
            return Some(format!(
                "the proxy {} refused the tunnel to {server}: it requires authorization (407); set the user in proxy_url and the password in proxy_password_env or proxy_password_file, or check them",
                ctx.proxy.as_deref().unwrap_or("in use")
            ));
        }
        cur = e.source();
    }
    None
}

/// [`explain`] for a webhook or Slack delivery: the receiver is named by host and port only (a
/// Slack URL's path is a credential), the roots as `[alerts]`'.
pub fn explain_sink_error(err: &reqwest::Error) -> Option<String> {
    let url = err.url()?;
    let ctx = TlsContext {
        roots: "the roots set by [alerts] tls_roots and ca_file".to_string(),
        client_cert: None,
        proxy: Some("of [alerts]".to_string()),
    };
    explain(err, &ctx, url).map(|why| format!("{why} (the receiver)"))
}

fn rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    // Connector errors travel boxed: a `Box<dyn Error>` is itself the error in the chain, and
    // its `source()` skips what it holds, so unwrap the boxes first.
    // tokio-rustls hands rustls errors up inside an io::Error, which the connector may wrap in
    // another; an io::Error's `source()` skips what it holds, so unwrap them here.
    let mut e = e;
    for _ in 0..8 {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        e = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
    None
}

fn describe_rustls(r: &rustls::Error, ctx: &TlsContext, server: &str) -> Option<String> {
    let roots = &ctx.roots;
    let untrusted_help = "if a private CA or a TLS-inspecting proxy signs it, add that CA's root with ca_file, or trust the operating system's store with tls_roots = \"system\"";
    Some(match r {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!(
                "the server certificate of {server} is not trusted: none of {roots} issued it; {untrusted_help}"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
                "the server certificate of {server} has expired (trusted roots: {roots})"
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
                "the server certificate of {server} is not valid yet (is this machine's clock right?)"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the server certificate is not valid for {server} (a name it was not issued for)")
            }
            other => format!(
                "the server certificate of {server} was refused ({other:?}; trusted roots: {roots})"
            ),
        },
        rustls::Error::AlertReceived(alert) => match (&ctx.client_cert, alert) {
            (None, AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure) => {
                format!(
                    "the server {server} requires a client certificate (TLS alert {alert:?}): DigiCert ONE's clientauth. hosts take mTLS only; set client_cert_file"
                )
            }
            (
                Some(c),
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::AccessDenied
                | AlertDescription::DecryptError
                | AlertDescription::CertificateRequired
                | AlertDescription::HandshakeFailure,
            ) => format!(
                "the server {server} rejected the client certificate {} ({}) with the TLS alert {alert:?}: is it issued by a CA that DigiCert trusts for this account, and registered there?",
                c.file.display(),
                c.subject
            ),
            (_, other) => format!("the TLS handshake with {server} failed: the server sent the alert {other:?}"),
        },
        // Plain HTTP on an https URL (InvalidContentType) and the rest: the general mapping.
        _ => return None,
    })
}

/// `auditwarden_client_cert_expiry_timestamp_seconds` for `/metrics`: per mTLS account, when its
/// client certificate expires (Unix time). Alert on `... - time() < 30 * 86400`. Reads each
/// certificate file: call it off the async threads.
pub fn expiry_metrics(accounts: &[Account]) -> String {
    let name = "auditwarden_client_cert_expiry_timestamp_seconds";
    let mut o = format!(
        "# HELP {name} Unix time at which the account's mTLS client certificate expires (warn {EXPIRY_WARNING_DAYS} days before).\n# TYPE {name} gauge\n"
    );
    for a in accounts {
        let Credential::ClientCert(c) = &a.credential else {
            continue;
        };
        // Unreadable or expired certificates fail the collection with their own message.
        let Ok(pem) = std::fs::read(&c.pem_file) else {
            continue;
        };
        let Some(Ok(leaf)) = CertificateDer::pem_slice_iter(&pem).next() else {
            continue;
        };
        if let Ok(info) = cert_info(&c.pem_file, &leaf) {
            let account = a
                .name
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            o.push_str(&format!(
                "{name}{{account=\"{account}\"}} {}\n",
                info.not_after.timestamp()
            ));
        }
    }
    o
}

fn host_port(u: &Url) -> String {
    match (u.host_str(), u.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => u.to_string(),
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}
