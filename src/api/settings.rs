//! The settings of one account, as `api::Client` is built from them: which API and where
//! (`endpoint`, the only place that knows DigiCert's host names), the credential, the collection
//! limits of `[collection]` and each `[[accounts]]`, and the TLS and proxy settings of every
//! outgoing client (`tls_roots`, `ca_file`, `proxy_url`; also read for `[alerts]`' sinks), with
//! their parsing. `config` composes them; nothing here imports `config`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::secret::Secret;
use crate::settings::{read_secret, resolve, secret_from, Env, SecretSource, Section};

pub use crate::domain::AccountKind;

/// One client-side rate-limit window: at most `requests` per `per_secs` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per_secs: u32,
}

/// How a failed request is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts at most).
    pub max_retries: u32,
    /// First backoff delay; doubles each retry, with jitter.
    pub base_delay: Duration,
    /// Longest single wait, also the longest `Retry-After` honoured in a pass.
    pub max_delay: Duration,
}

/// A DigiCert ONE mTLS identity: a PEM file holding the client certificate and its private key.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub pem_file: PathBuf,
}

#[derive(Debug, Clone)]
pub enum Credential {
    ApiKey(Secret),
    ClientCert(ClientCert),
}

/// Which trust anchors verify a server's certificate, besides `ca_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsRoots {
    /// The Mozilla roots compiled into the binary (webpki-roots): the same on every machine.
    #[default]
    Builtin,
    /// The operating system's store (e.g. `/etc/ssl/certs`, or `SSL_CERT_FILE`), where companies
    /// often install their own roots.
    System,
}

impl TlsRoots {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsRoots::Builtin => "builtin",
            TlsRoots::System => "system",
        }
    }
}

/// How servers are verified: `tls_roots` and `ca_file`, in `[collection]` (overridable per
/// account) and in `[alerts]` (the webhook and Slack sinks).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    pub roots: TlsRoots,
    /// A PEM file of extra roots (a private CA, a TLS-inspecting proxy's CA), trusted in addition
    /// to `roots`.
    pub ca_file: Option<PathBuf>,
}

/// One proxy server and its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyServer {
    /// `scheme://host:port`, without user or password: safe to print.
    pub url: Url,
    /// The user name from the URL (`http://USER@host:port`), percent-decoded.
    pub username: Option<String>,
    /// From `proxy_password_env` / `proxy_password_file`, or from a proxy environment variable.
    pub password: Option<Secret>,
    /// Where it was configured, for messages: `proxy_url` or the environment variable's name.
    pub source: String,
}

/// The proxies the standard environment names, read once when the configuration is loaded
/// (through [`Env`], like every other value from the environment).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvProxies {
    /// `HTTPS_PROXY` / `https_proxy`, else `ALL_PROXY` / `all_proxy`: for https:// URLs.
    pub https: Option<ProxyServer>,
    /// `HTTP_PROXY` / `http_proxy`, else `ALL_PROXY` / `all_proxy`: for http:// URLs.
    pub http: Option<ProxyServer>,
    /// `NO_PROXY` / `no_proxy`: hosts, domains (and their subdomains), IP addresses or networks
    /// that bypass the proxies above; `*` bypasses them all.
    pub no_proxy: Option<String>,
}

/// Where requests go: `proxy_url` in `[collection]` (overridable per account) and `[alerts]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxySetting {
    /// No `proxy_url`: the standard environment (nothing set: direct).
    Environment(EnvProxies),
    /// `proxy_url = ""`: straight to the server, whatever the environment says.
    Direct,
    /// `proxy_url = "..."`: every request through this proxy (`NO_PROXY` does not apply).
    Explicit(ProxyServer),
}

impl Default for ProxySetting {
    fn default() -> Self {
        ProxySetting::Environment(EnvProxies::default())
    }
}

/// A validated account.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub kind: AccountKind,
    /// Scheme, host and port; the API paths are appended by the client.
    pub base_url: Url,
    pub credential: Credential,
    /// Audit-log action filter; empty means every action.
    pub actions: Vec<String>,
    pub backfill_days: u32,
    pub collection: CollectionSettings,
    /// CertCentral: collect the audit log through the Report Library (`audit_log`, default
    /// true). Always true for DigiCert ONE.
    pub audit_log: bool,
    /// CertCentral: the Report Library's scheme, host and port (`report_base_url`); `None`
    /// means `base_url` when that was set, else the region's API host (see `report_endpoint`).
    pub report_base_url: Option<Url>,
    /// The daemon's `[daemon] node_name`, named in the `User-Agent` of this account's requests
    /// (`auditwarden/VERSION (node NAME)`) so the server side can tell daemons apart; `None`
    /// outside the daemon. Set by the daemon, not read from the file.
    pub node: Option<String>,
}

/// Collection settings: `[collection]` holds the defaults, each `[[accounts]]` may override them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionSettings {
    pub page_size: u32,
    pub request_timeout: Duration,
    pub overlap_days: u32,
    pub rate_limits: Vec<RateLimit>,
    pub retry: RetryPolicy,
    /// How many times one window is re-read within a pass when paging was seen to shift.
    pub max_window_rereads: u32,
    /// The most pages one read may take: a day window of the audit log, or one user listing. A
    /// server that keeps serving full pages past it (a lying total, new ids on every page) ends
    /// the account's pass with an error instead of running for ever.
    pub max_pages_per_window: u32,
    /// The largest response body read; a larger one fails its request (not retried).
    pub max_response_bytes: u64,
    /// Day windows of one account read at once during a backfill (within the throttle), so the
    /// network and the writer overlap.
    pub concurrent_windows: u32,
    /// `tls_roots`, `ca_file`.
    pub tls: TlsSettings,
    /// `proxy_url` (with `proxy_password_env` / `proxy_password_file`), or the environment.
    pub proxy: ProxySetting,
}

impl Default for CollectionSettings {
    fn default() -> Self {
        CollectionSettings {
            page_size: default_page_size(),
            request_timeout: Duration::from_secs(default_request_timeout_secs()),
            overlap_days: default_overlap_days(),
            rate_limits: default_rate_limits(),
            retry: RetryPolicy {
                max_retries: default_max_retries(),
                base_delay: Duration::from_millis(default_retry_base_ms()),
                max_delay: Duration::from_secs(default_retry_max_secs()),
            },
            max_window_rereads: default_max_window_rereads(),
            max_pages_per_window: default_max_pages_per_window(),
            max_response_bytes: default_max_response_bytes(),
            concurrent_windows: default_concurrent_windows(),
            tls: TlsSettings::default(),
            proxy: ProxySetting::default(),
        }
    }
}

/// The server maximum of the contract (section 1.2): fewer requests per event.
fn default_page_size() -> u32 {
    1000
}

fn default_request_timeout_secs() -> u64 {
    30
}

/// Today and yesterday are re-read every pass: `from`/`to` are day-granular.
fn default_overlap_days() -> u32 {
    2
}

/// None configured: each API's own default (`api::throttle`): CertCentral's documented windows
/// (contract 2.4), and for DigiCert ONE, which publishes none, no fixed cap but a pace learned
/// from the server's 429s.
fn default_rate_limits() -> Vec<RateLimit> {
    Vec::new()
}

fn default_max_retries() -> u32 {
    8
}

fn default_retry_base_ms() -> u64 {
    500
}

fn default_retry_max_secs() -> u64 {
    120
}

fn default_max_window_rereads() -> u32 {
    5
}

/// 200 pages of the default 1000: 200,000 events in one UTC day (or users in one listing), far
/// past any real account (a sibling DigiCert ONE service exports at most 10,000 entries); a server
/// that never ends a read costs at most this many requests and stores at most this many pages.
fn default_max_pages_per_window() -> u32 {
    200
}

/// 32 MiB: a full page of 1000 events is about 0.6 MB, so this is 50 times the largest page the
/// contract allows, and still a bounded amount of memory per account.
/// 4 day windows in flight: enough to keep the writer busy while requests wait on the network
/// (`cargo bench --bench collect`), few enough that a server sees a handful of requests at once.
fn default_concurrent_windows() -> u32 {
    4
}
fn default_max_response_bytes() -> u64 {
    32 * 1024 * 1024
}

fn default_backfill_days() -> u32 {
    90
}

/// `tls_roots`, `ca_file`, `proxy_url`, `proxy_password_env` and `proxy_password_file` of one
/// section (`[collection]`, an account, `[alerts]`), applied over what the section inherits. An
/// account that sets its own `proxy_url` takes the password keys of its own section only, so a
/// password meant for one proxy is never sent to another.
pub fn transport_keys(
    s: &mut Section<'_>,
    tls: &mut TlsSettings,
    proxy: &mut ProxySetting,
    base_dir: &Path,
    env: &dyn Env,
    problems: &mut Vec<String>,
) {
    if let Some(v) = s.string("tls_roots", problems) {
        match v.as_str() {
            "builtin" => tls.roots = TlsRoots::Builtin,
            "system" => tls.roots = TlsRoots::System,
            other => problems.push(format!(
                "{}: {other:?} is not \"builtin\" (the public roots built into auditwarden) or \"system\" (the operating system's store)",
                s.key("tls_roots")
            )),
        }
    }
    if let Some(f) = s.string("ca_file", problems) {
        if f.trim().is_empty() {
            // An account may drop the default's extra roots.
            tls.ca_file = None;
        } else {
            let p = resolve(base_dir, &f);
            if p.is_file() {
                tls.ca_file = Some(p);
            } else {
                problems.push(format!(
                    "{}: {} is not a readable file (PEM certificates to trust)",
                    s.key("ca_file"),
                    p.display()
                ));
            }
        }
    }
    let url_key = s.key("proxy_url");
    let url = s.string("proxy_url", problems);
    let password = secret_from(s, "proxy_password", base_dir, env, problems);
    let password_key = if s.has("proxy_password_env") {
        s.key("proxy_password_env")
    } else {
        s.key("proxy_password_file")
    };
    match url {
        Some(u) if u.trim().is_empty() => {
            if password.is_some() {
                problems.push(format!(
                    "{password_key}: set, but proxy_url = \"\" means no proxy"
                ));
            }
            *proxy = ProxySetting::Direct;
        }
        Some(u) => {
            if let Some(mut server) = proxy_server(&url_key, &u, "proxy_url", problems) {
                if password.is_some() && server.username.is_none() {
                    problems.push(format!(
                        "{password_key}: {url_key} names no user; write it as http://USER@host:port"
                    ));
                }
                server.password = password;
                *proxy = ProxySetting::Explicit(server);
            }
        }
        None => {
            if let Some(pw) = password {
                match proxy {
                    ProxySetting::Explicit(server) if server.username.is_some() => {
                        server.password = Some(pw)
                    }
                    ProxySetting::Explicit(_) => problems.push(format!(
                        "{password_key}: the inherited proxy_url names no user; write it as http://USER@host:port"
                    )),
                    _ => problems.push(format!(
                        "{password_key}: needs proxy_url (the proxy it is the password of)"
                    )),
                }
            }
        }
    }
}

/// A proxy URL from the configuration (`proxy_url`) or the environment (`HTTPS_PROXY`). The text
/// is never echoed in a problem: it may hold a password. In the configuration a password is
/// refused (it belongs in `proxy_password_env` / `proxy_password_file`); in the environment, where
/// `http://user:password@host:port` is the convention, it is kept as a [`Secret`].
fn proxy_server(
    key: &str,
    raw: &str,
    source: &str,
    problems: &mut Vec<String>,
) -> Option<ProxyServer> {
    let from_env = source != "proxy_url";
    let text = raw.trim();
    // The environment convention allows a bare host:port (curl and reqwest assume http://).
    let with_scheme = if from_env && !text.contains("://") {
        format!("http://{text}")
    } else {
        text.to_string()
    };
    let Ok(mut url) = Url::parse(&with_scheme) else {
        problems.push(format!(
            "{key}: not a proxy URL like http://proxy.example.com:3128 (the value is not shown: it may hold a password)"
        ));
        return None;
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        problems.push(format!(
            "{key}: a proxy must be http:// or https:// with a host (the value is not shown)"
        ));
        return None;
    }
    if url.password().is_some() && !from_env {
        problems.push(format!(
            "{key}: the URL holds a password, which is not shown and not accepted here: keep the user in the URL (http://USER@host:port) and put the password in proxy_password_env or proxy_password_file"
        ));
        return None;
    }
    if (url.path() != "/" && !url.path().is_empty())
        || url.query().is_some()
        || url.fragment().is_some()
    {
        problems.push(format!(
            "{key}: a proxy URL is scheme, host and port only (the value is not shown)"
        ));
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let username = Some(decode(url.username())).filter(|u| !u.is_empty());
    let password = url.password().map(|p| Secret::new(decode(p)));
    // Neither can fail on an http(s) URL with a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some(ProxyServer {
        url,
        username,
        password,
        source: source.to_string(),
    })
}

/// The standard proxy environment: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, each
/// also in lower case (upper case wins), as curl and most HTTP clients read them.
pub fn env_proxies(env: &dyn Env, problems: &mut Vec<String>) -> EnvProxies {
    let first = |names: &[&'static str]| {
        names
            .iter()
            .find_map(|n| env.var(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
    };
    let mut server = |names: &[&'static str]| {
        first(names).and_then(|(name, v)| {
            proxy_server(&format!("environment variable {name}"), &v, name, problems)
        })
    };
    let all = server(&["ALL_PROXY", "all_proxy"]);
    let https = server(&["HTTPS_PROXY", "https_proxy"]).or_else(|| all.clone());
    let http = server(&["HTTP_PROXY", "http_proxy"]).or(all);
    let no_proxy = first(&["NO_PROXY", "no_proxy"]).map(|(_, v)| v.trim().to_string());
    EnvProxies {
        https,
        http,
        no_proxy,
    }
}

/// The collection keys of `[collection]` or an account, over `base`.
pub fn collection_settings(
    s: &mut Section<'_>,
    base: &CollectionSettings,
    problems: &mut Vec<String>,
) -> CollectionSettings {
    let mut c = base.clone();
    if let Some(v) = s.integer("page_size", 1, 1000, problems) {
        c.page_size = v as u32;
    }
    if let Some(v) = s.integer("request_timeout_secs", 1, 3600, problems) {
        c.request_timeout = Duration::from_secs(v as u64);
    }
    if let Some(v) = s.integer("overlap_days", 0, 366, problems) {
        c.overlap_days = v as u32;
    }
    if let Some(v) = s.integer("max_retries", 0, 100, problems) {
        c.retry.max_retries = v as u32;
    }
    if let Some(v) = s.integer("retry_base_ms", 1, 600_000, problems) {
        c.retry.base_delay = Duration::from_millis(v as u64);
    }
    if let Some(v) = s.integer("retry_max_secs", 1, 86_400, problems) {
        c.retry.max_delay = Duration::from_secs(v as u64);
    }
    if let Some(v) = s.integer("max_window_rereads", 0, 100, problems) {
        c.max_window_rereads = v as u32;
    }
    if let Some(v) = s.integer("max_pages_per_window", 1, 1_000_000, problems) {
        c.max_pages_per_window = v as u32;
    }
    if let Some(v) = s.integer("max_response_bytes", 65_536, 4 << 30, problems) {
        c.max_response_bytes = v as u64;
    }
    if let Some(v) = s.integer("concurrent_windows", 1, 64, problems) {
        c.concurrent_windows = v as u32;
    }
    if let Some(v) = s.take("rate_limits") {
        let key = s.key("rate_limits");
        match v {
            toml::Value::Array(items) => {
                let mut limits = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let k = format!("{key}[{i}]");
                    let Some(t) = item.as_table() else {
                        problems.push(format!(
                            "{k}: must be a table like {{ requests = 100, per_secs = 5 }}"
                        ));
                        continue;
                    };
                    let mut r = Section::new(k, t);
                    let req = r.integer("requests", 1, 1_000_000, problems);
                    let per = r.integer("per_secs", 1, 86_400, problems);
                    match (req, per) {
                        (Some(requests), Some(per_secs)) => limits.push(RateLimit {
                            requests: requests as u32,
                            per_secs: per_secs as u32,
                        }),
                        (None, _) if !r.has("requests") => {
                            problems.push(format!("{}: missing", r.key("requests")))
                        }
                        (_, None) if !r.has("per_secs") => {
                            problems.push(format!("{}: missing", r.key("per_secs")))
                        }
                        _ => {}
                    }
                    r.finish(problems);
                }
                c.rate_limits = limits;
            }
            _ => problems.push(format!(
                "{key}: must be an array like [{{ requests = 100, per_secs = 5 }}]"
            )),
        }
    }
    c
}

/// One `[[accounts]]` table at `key` (`accounts[0]`), over the `[collection]` defaults.
pub fn account(
    key: &str,
    t: &toml::Table,
    defaults: &CollectionSettings,
    base_dir: &Path,
    env: &dyn Env,
    problems: &mut Vec<String>,
) -> Option<Account> {
    let before = problems.len();
    let mut s = Section::new(key.to_string(), t);
    let name = s.string("name", problems);
    match &name {
        None if !s.has("name") => problems.push(format!("{key}.name: missing")),
        Some(n) if n.is_empty() || n.len() > 64 || n.chars().any(|c| c.is_control()) => problems
            .push(format!(
                "{key}.name: {n:?} must be 1 to 64 printable characters"
            )),
        _ => {}
    }
    let kind = match s.string("kind", problems).as_deref() {
        Some("digicert-one") => Some(AccountKind::DigicertOne),
        Some("certcentral") => Some(AccountKind::CertCentral),
        Some(other) => {
            problems.push(format!(
                "{key}.kind: {other:?} is not one of \"digicert-one\", \"certcentral\""
            ));
            None
        }
        None => {
            if !s.has("kind") {
                problems.push(format!(
                    "{key}.kind: missing (\"digicert-one\" or \"certcentral\")"
                ));
            }
            None
        }
    };
    let region = s.string("region", problems);
    let environment = s.string("environment", problems);
    let base_url = s.string("base_url", problems);
    let api_key_env = s.string("api_key_env", problems);
    let api_key_file = s.string("api_key_file", problems);
    let client_cert_file = s.string("client_cert_file", problems);
    let actions = s.string_list("actions", problems).unwrap_or_default();
    let audit_log = s.boolean("audit_log", problems);
    let report_base_url = s.string("report_base_url", problems);
    for (i, a) in actions.iter().enumerate() {
        if a.trim().is_empty() {
            problems.push(format!("{key}.actions[{i}]: empty action name"));
        }
    }
    let dedup: BTreeSet<&String> = actions.iter().collect();
    if dedup.len() != actions.len() {
        problems.push(format!("{key}.actions: lists an action twice"));
    }
    let backfill_days = s
        .integer("backfill_days", 0, 3650, problems)
        .map(|v| v as u32)
        .unwrap_or_else(default_backfill_days);
    let mut collection = collection_settings(&mut s, defaults, problems);
    transport_keys(
        &mut s,
        &mut collection.tls,
        &mut collection.proxy,
        base_dir,
        env,
        problems,
    );
    s.finish(problems);

    let kind = kind?;
    let url = endpoint(
        key,
        kind,
        region.as_deref(),
        environment.as_deref(),
        base_url.as_deref(),
        client_cert_file.is_some(),
        problems,
    );
    let credential = credential(
        key,
        kind,
        api_key_env.as_deref(),
        api_key_file.as_deref(),
        client_cert_file.as_deref(),
        base_dir,
        env,
        problems,
    );
    if client_cert_file.is_some() && url.as_ref().is_some_and(|u| u.scheme() != "https") {
        problems.push(format!(
            "{key}.client_cert_file: a client certificate is only presented over https://; base_url is http://"
        ));
    }
    if kind != AccountKind::CertCentral {
        if audit_log.is_some() {
            problems.push(format!(
                "{key}.audit_log: only for certcentral accounts (a digicert-one account always collects its audit log)"
            ));
        }
        if report_base_url.is_some() {
            problems.push(format!(
                "{key}.report_base_url: only for certcentral accounts"
            ));
        }
    }
    let report_url = match (kind, report_base_url.as_deref()) {
        (AccountKind::CertCentral, Some(raw)) => {
            report_url_of(&format!("{key}.report_base_url"), raw, problems)
        }
        (AccountKind::CertCentral, None) if base_url.is_none() => {
            match region.as_deref().unwrap_or("us") {
                "eu" => Url::parse("https://api.digicert.eu").ok(),
                _ => Url::parse("https://api.digicert.com").ok(),
            }
        }
        _ => None,
    };
    if problems.len() > before {
        return None;
    }
    Some(Account {
        name: name?,
        kind,
        base_url: url?,
        credential: credential?,
        actions,
        backfill_days,
        collection,
        audit_log: audit_log.unwrap_or(true),
        report_base_url: report_url,
        node: None,
    })
}

/// `report_base_url`: scheme, host and port only (the client appends `/reports/v1`). The Report
/// Library's host is `api.digicert.com` for us [C]; for eu the contract only assumes the same path
/// on the eu API host (`api.digicert.eu` here, [A]), hence the key.
fn report_url_of(key: &str, raw: &str, problems: &mut Vec<String>) -> Option<Url> {
    let shown = crate::text::redact_userinfo(raw);
    match Url::parse(raw) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && (u.path() == "/" || u.path().is_empty())
                && u.query().is_none() =>
        {
            Some(u)
        }
        Ok(_) => {
            problems.push(format!(
                "{key}: {shown:?} must be http:// or https://, scheme, host and port only, no user name (the client appends /reports/v1)"
            ));
            None
        }
        Err(e) => {
            problems.push(format!("{key}: {shown:?} is not a URL: {e}"));
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn credential(
    key: &str,
    kind: AccountKind,
    api_key_env: Option<&str>,
    api_key_file: Option<&str>,
    client_cert_file: Option<&str>,
    base_dir: &Path,
    env: &dyn Env,
    problems: &mut Vec<String>,
) -> Option<Credential> {
    let given = [api_key_env, api_key_file, client_cert_file]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if given > 1 {
        problems.push(format!(
            "{key}: set only one of api_key_env, api_key_file, client_cert_file"
        ));
        return None;
    }
    if let Some(var) = api_key_env {
        return read_secret(
            &format!("{key}.api_key_env"),
            SecretSource::Env(var),
            base_dir,
            env,
            problems,
        )
        .map(Credential::ApiKey);
    }
    if let Some(file) = api_key_file {
        return read_secret(
            &format!("{key}.api_key_file"),
            SecretSource::File(file),
            base_dir,
            env,
            problems,
        )
        .map(Credential::ApiKey);
    }
    if let Some(file) = client_cert_file {
        if kind != AccountKind::DigicertOne {
            problems.push(format!(
                "{key}.client_cert_file: mTLS is only for digicert-one accounts"
            ));
            return None;
        }
        let p = resolve(base_dir, file);
        if !p.is_file() {
            problems.push(format!(
                "{key}.client_cert_file: {} is not a readable file",
                p.display()
            ));
            return None;
        }
        return Some(Credential::ClientCert(ClientCert { pem_file: p }));
    }
    problems.push(format!(
        "{key}: no credential: set api_key_env or api_key_file{}",
        if kind == AccountKind::DigicertOne {
            " (or client_cert_file for mTLS)"
        } else {
            ""
        }
    ));
    None
}

fn endpoint(
    key: &str,
    kind: AccountKind,
    region: Option<&str>,
    environment: Option<&str>,
    base_url: Option<&str>,
    mtls: bool,
    problems: &mut Vec<String>,
) -> Option<Url> {
    let env_name = environment.unwrap_or("production");
    if !matches!(env_name, "production" | "demo") {
        problems.push(format!(
            "{key}.environment: {env_name:?} is not \"production\" or \"demo\""
        ));
        return None;
    }
    if kind == AccountKind::CertCentral && env_name == "demo" {
        problems.push(format!(
            "{key}.environment: \"demo\" exists only for digicert-one accounts"
        ));
        return None;
    }
    if let Some(raw) = base_url {
        // The URL as messages show it: a user name or password in it is never echoed.
        let shown = crate::text::redact_userinfo(raw);
        let url = match Url::parse(raw) {
            Ok(u) => u,
            Err(e) => {
                problems.push(format!("{key}.base_url: {shown:?} is not a URL: {e}"));
                return None;
            }
        };
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            problems.push(format!(
                "{key}.base_url: {shown:?} must be http:// or https:// with a host"
            ));
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            problems.push(format!(
                "{key}.base_url: {shown:?} holds a user name or password; remove it (the API key goes in api_key_env or api_key_file, never in the URL)"
            ));
            return None;
        }
        if (url.path() != "/" && !url.path().is_empty())
            || url.query().is_some()
            || url.fragment().is_some()
        {
            problems.push(format!(
                "{key}.base_url: {shown:?} must be scheme, host and port only (the client appends /account/api/v1 or /services/v2)"
            ));
            return None;
        }
        return Some(url);
    }
    let region = region.unwrap_or("us");
    let host = match (kind, region, env_name) {
        (AccountKind::DigicertOne, "us", "production") => "one.digicert.com",
        (AccountKind::DigicertOne, "us", _) => "demo.one.digicert.com",
        (AccountKind::DigicertOne, "ch", "production") => "one.ch.digicert.com",
        (AccountKind::DigicertOne, "ch", _) => "demo.one.ch.digicert.com",
        (AccountKind::DigicertOne, "jp", "production") => "one.digicert.co.jp",
        (AccountKind::DigicertOne, "jp", _) => "demo.one.digicert.co.jp",
        (AccountKind::DigicertOne, "nl", "production") => "one.nl.digicert.com",
        (AccountKind::DigicertOne, "nl", _) => "demo.one.nl.digicert.com",
        (AccountKind::CertCentral, "us", _) => "www.digicert.com",
        (AccountKind::CertCentral, "eu", _) => "certcentral.digicert.eu",
        (AccountKind::DigicertOne, other, _) => {
            problems.push(format!(
                "{key}.region: {other:?} is not a digicert-one region (us, ch, jp, nl)"
            ));
            return None;
        }
        (AccountKind::CertCentral, other, _) => {
            problems.push(format!(
                "{key}.region: {other:?} is not a certcentral region (us, eu)"
            ));
            return None;
        }
    };
    let host = if mtls {
        format!("clientauth.{host}")
    } else {
        host.to_string()
    };
    Url::parse(&format!("https://{host}")).ok()
}
