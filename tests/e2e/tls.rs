//! TLS as enterprises run it, end to end through the real binary: the simulator serves HTTPS with
//! a certificate from a test CA and requires client certificates from another (all made here with
//! rcgen), accounts trust a private CA through `ca_file`, and a CONNECT proxy on loopback carries
//! the traffic. Certificate dates are whole days relative to the system clock, which is what a
//! TLS peer judges them by, so no outcome depends on the hour.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use chrono::{Datelike, NaiveDate, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::helpers::*;

/// A CA made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// The system date `days` from today (the clock TLS validity is judged by).
fn day(days: i64) -> NaiveDate {
    Utc::now().date_naive() + chrono::Duration::days(days)
}

/// Valid from midnight (UTC) `from` days from today to midnight `until` days from today.
fn validity(p: &mut CertificateParams, from: i64, until: i64) {
    let (a, b) = (day(from), day(until));
    p.not_before = rcgen::date_time_ymd(a.year(), a.month() as u8, a.day() as u8);
    p.not_after = rcgen::date_time_ymd(b.year(), b.month() as u8, b.day() as u8);
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, -2, 3650);
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-signed");
    Ca { cert, key }
}

/// A certificate issued by `ca` for `cn`, valid from `from` to `until` days from today: a server
/// certificate for 127.0.0.1 or a client certificate. Returns (certificate PEM, key PEM).
fn issue(ca: &Ca, cn: &str, client: bool, from: i64, until: i64) -> (String, String) {
    let sans = if client {
        Vec::new()
    } else {
        vec!["127.0.0.1".to_string(), "localhost".to_string()]
    };
    let mut p = CertificateParams::new(sans).expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut p, from, until);
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &ca.cert, &ca.key).expect("sign");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write pem");
    p
}

/// A server CA, its certificate for 127.0.0.1, and a client CA, written into `dir`.
struct Pki {
    server_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_ca: Ca,
    client_ca_file: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let server_ca = ca("auditwarden test server CA");
    let (cert, key) = issue(&server_ca, "127.0.0.1", false, -1, 365);
    let client_ca = ca("auditwarden test client CA");
    Pki {
        server_ca: write(dir, "server-ca.pem", &server_ca.cert.pem()),
        server_cert: write(dir, "server.pem", &cert),
        server_key: write(dir, "server-key.pem", &key),
        client_ca_file: write(dir, "client-ca.pem", &client_ca.cert.pem()),
        client_ca,
    }
}

/// A client identity file (certificate then key) issued by `ca`.
fn identity(dir: &Path, name: &str, ca: &Ca, from: i64, until: i64) -> PathBuf {
    let (cert, key) = issue(ca, &format!("auditwarden {name}"), true, from, until);
    write(dir, &format!("{name}.pem"), &format!("{cert}{key}"))
}

fn start_sim(pki: &Pki, mtls: bool, events: &str) -> (Sim, String) {
    let cert = pki.server_cert.display().to_string();
    let key = pki.server_key.display().to_string();
    let ca = pki.client_ca_file.display().to_string();
    let mut args = vec![
        "--events",
        events,
        "--days",
        "5",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    if mtls {
        args.extend(["--client-ca", ca.as_str()]);
    }
    Sim::start_tls(&args)
}

/// Every proxy variable, removed so the machine's environment cannot route a test.
const PROXY_VARS: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

fn run_clean(app: &App, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = app.command(args);
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run auditwarden");
    assert_no_key(&out);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The line of `out` that starts with `account`.
fn line_of<'a>(out: &'a str, account: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{account}: ")) || l.starts_with(&format!("{account} (")))
        .unwrap_or_else(|| panic!("no line for {account} in:\n{out}"))
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// An mTLS account (client certificate, no API key) is collected exactly like an API-key
/// account, and `check` reports the trusted server and the accepted certificate.
#[test]
fn mtls_account_is_collected_like_an_api_key_account() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (sim, https) = start_sim(&pki, true, "400");
    let id = identity(dir.path(), "client", &pki.client_ca, -1, 365);
    let extra = format!(
        "client_cert_file = {}\nca_file = {}\n",
        toml_path(&id),
        toml_path(&pki.server_ca)
    );
    let app = App::with_accounts(&[("one", "digicert-one", &https, &extra)]);
    let cfg = std::fs::read_to_string(&app.config).unwrap();
    assert!(
        !cfg.contains("api_key"),
        "the mTLS account has no key:\n{cfg}"
    );

    let (code, stdout, stderr) = run_clean(&app, &["collect"], &[]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(line_of(&stdout, "one").contains("one: ok"), "{stdout}");
    assert_matches_truth(&app, &sim, "one");
    assert!(sim.stats()["tls_connections"].as_u64().unwrap() > 0);

    let (code, stdout, _) = run_clean(&app, &["check"], &[]);
    assert_eq!(code, Some(0), "{stdout}");
    let port = https.rsplit(':').next().unwrap();
    assert!(
        stdout.contains(&format!(
            "tls: server certificate of 127.0.0.1:{port} trusted (the built-in public roots and ca_file {})",
            pki.server_ca.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "tls: client certificate {} (CN=auditwarden client) accepted, valid until {} 00:00 UTC",
            id.display(),
            day(365)
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("WARNING"), "{stdout}");

    // The same server refuses a connection without a certificate, even with the right key.
    let keyed = App::with_accounts(&[(
        "keyed",
        "digicert-one",
        &https,
        &format!("ca_file = {}\n", toml_path(&pki.server_ca)),
    )]);
    let (code, stdout, _) = run_clean(&keyed, &["collect"], &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        line_of(&stdout, "keyed").contains("requires a client certificate"),
        "{stdout}"
    );
}

/// A client certificate that is expired, not yet valid, paired with the wrong key, or issued by a
/// CA the server does not trust: each fails with its own message naming the account and the file.
#[test]
fn bad_client_certificates_each_have_their_own_message() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (_sim, https) = start_sim(&pki, true, "50");
    let expired = identity(dir.path(), "expired", &pki.client_ca, -30, -10);
    let early = identity(dir.path(), "early", &pki.client_ca, 5, 365);
    let stranger_ca = ca("a CA the server does not know");
    let untrusted = identity(dir.path(), "untrusted", &stranger_ca, -1, 365);
    // A valid certificate with another certificate's key.
    let (cert, _) = issue(&pki.client_ca, "auditwarden mismatch", true, -1, 365);
    let (_, other_key) = issue(&pki.client_ca, "someone else", true, -1, 365);
    let mismatch = write(dir.path(), "mismatch.pem", &format!("{cert}{other_key}"));
    let ca_line = format!("ca_file = {}\n", toml_path(&pki.server_ca));
    let acct = |p: &Path| format!("client_cert_file = {}\n{ca_line}", toml_path(p));
    let (e1, e2, e3, e4) = (
        acct(&expired),
        acct(&early),
        acct(&mismatch),
        acct(&untrusted),
    );
    let app = App::with_accounts(&[
        ("expired", "digicert-one", &https, &e1),
        ("early", "digicert-one", &https, &e2),
        ("mismatch", "digicert-one", &https, &e3),
        ("untrusted", "digicert-one", &https, &e4),
    ]);
    let expected = [
        (
            "expired",
            &expired,
            format!("expired on {} 00:00 UTC: renew it", day(-10)),
        ),
        (
            "early",
            &early,
            format!("is not valid before {} 00:00 UTC", day(5)),
        ),
        (
            "mismatch",
            &mismatch,
            "the private key does not belong to the certificate".to_string(),
        ),
        (
            "untrusted",
            &untrusted,
            "rejected the client certificate".to_string(),
        ),
    ];
    for cmd in ["collect", "check"] {
        let (code, stdout, stderr) = run_clean(&app, &[cmd], &[]);
        assert_eq!(code, Some(1), "{cmd}: {stdout}\n{stderr}");
        for (account, file, needle) in &expected {
            let line = line_of(&stdout, account);
            assert!(
                line.contains("FAILED")
                    && line.contains(&file.display().to_string())
                    && line.contains(needle.as_str()),
                "{cmd} {account}: {needle:?} and the file in:\n{line}"
            );
        }
        // Each message is its own: no two accounts share one.
        let untrusted_line = line_of(&stdout, "untrusted");
        assert!(untrusted_line.contains("TLS alert"), "{untrusted_line}");
        assert!(!line_of(&stdout, "expired").contains("TLS alert"));
    }
}

/// A server whose certificate a private CA issued is trusted through `ca_file`, and refused
/// without it (naming the roots that were used), with either kind of built-in roots.
#[test]
fn private_server_ca_is_trusted_through_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (sim, https) = start_sim(&pki, false, "300");
    let garbage = write(dir.path(), "garbage.pem", "not a certificate\n");
    let with_ca = format!("ca_file = {}\n", toml_path(&pki.server_ca));
    let bad_ca = format!("ca_file = {}\n", toml_path(&garbage));
    let app = App::with_accounts(&[
        ("trusted", "digicert-one", &https, &with_ca),
        ("builtin", "digicert-one", &https, ""),
        ("system", "digicert-one", &https, "tls_roots = \"system\"\n"),
        ("garbage", "digicert-one", &https, &bad_ca),
    ]);
    let (code, stdout, stderr) = run_clean(&app, &["collect"], &[]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        line_of(&stdout, "trusted").contains("trusted: ok"),
        "{stdout}"
    );
    assert_matches_truth(&app, &sim, "trusted");
    let port = https.rsplit(':').next().unwrap();
    let builtin = line_of(&stdout, "builtin");
    assert!(
        builtin.contains(&format!(
            "the server certificate of 127.0.0.1:{port} is not trusted: none of the built-in public roots issued it"
        )) && builtin.contains("ca_file"),
        "{builtin}"
    );
    let system = line_of(&stdout, "system");
    assert!(
        // (A machine with an empty store says so instead; both name it.)
        system.contains("FAILED") && system.contains("the operating system's"),
        "{system}"
    );
    let garbage_line = line_of(&stdout, "garbage");
    assert!(
        garbage_line.contains(&format!(
            "ca_file {} holds no PEM certificate",
            garbage.display()
        )),
        "{garbage_line}"
    );
    // Nothing was stored for the refused accounts.
    assert!(app.stored_ids("builtin").is_empty());
}

/// What a test proxy saw of one CONNECT.
#[derive(Debug, Clone)]
struct Tunnel {
    target: String,
    auth: Option<String>,
}

/// A small CONNECT proxy on loopback: records every tunnel, requires Basic credentials when
/// given, connects only to 127.0.0.1, and stops when dropped.
struct ConnectProxy {
    addr: String,
    seen: Arc<Mutex<Vec<Tunnel>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The most connections one test proxy serves (the accept loop is bounded).
const MAX_PROXY_CONNECTIONS: usize = 2000;

impl ConnectProxy {
    fn start(credentials: Option<(&str, &str)>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let want = credentials.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming().take(MAX_PROXY_CONNECTIONS) {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (seen, want) = (seen.clone(), want.clone());
                    std::thread::spawn(move || tunnel(conn, &seen, want.as_deref()));
                }
            })
        };
        ConnectProxy {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn tunnels(&self) -> Vec<Tunnel> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tunnel(client: TcpStream, seen: &Mutex<Vec<Tunnel>>, want: Option<&str>) {
    client.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut reader = BufReader::new(match client.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut head = Vec::new();
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let mut client = client;
    let Some(target) = head
        .first()
        .and_then(|l| l.strip_prefix("CONNECT "))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
    else {
        let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let auth = head.iter().find_map(|h| {
        let (k, v) = h.split_once(':')?;
        k.eq_ignore_ascii_case("proxy-authorization")
            .then(|| v.trim().to_string())
    });
    seen.lock().unwrap().push(Tunnel {
        target: target.clone(),
        auth: auth.clone(),
    });
    if want.is_some() && auth.as_deref() != want {
        let _ = client.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
        );
        return;
    }
    // Tests reach only 127.0.0.1.
    if !target.starts_with("127.0.0.1:") {
        let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let Ok(server) = TcpStream::connect(&target) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let (Ok(mut s2), Ok(mut c2)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut s2);
        let _ = s2.shutdown(std::net::Shutdown::Write);
    });
    let mut server = server;
    let _ = std::io::copy(&mut server, &mut c2);
    let _ = c2.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
    let _ = server.read(&mut [0u8; 0]);
}

/// `HTTPS_PROXY` sends every connection through the CONNECT proxy (the simulator accepted no
/// connection that did not come through a tunnel), and `NO_PROXY` bypasses it.
#[test]
fn https_proxy_carries_every_connection_and_no_proxy_bypasses_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (sim, https) = start_sim(&pki, false, "300");
    let proxy = ConnectProxy::start(None);
    let extra = format!("ca_file = {}\n", toml_path(&pki.server_ca));
    let app = App::with_accounts(&[("one", "digicert-one", &https, &extra)]);
    let env = [("HTTPS_PROXY", proxy.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let (code, stdout, stderr) = run_clean(&app, &["collect"], &env);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_matches_truth(&app, &sim, "one");
    let tunnels = proxy.tunnels();
    let connections = sim.stats()["tls_connections"].as_u64().unwrap();
    assert!(connections > 0);
    assert_eq!(
        tunnels.len() as u64,
        connections,
        "every connection the server accepted came through the proxy: {tunnels:?}"
    );
    let authority = https.trim_start_matches("https://");
    assert!(tunnels.iter().all(|t| t.target == authority), "{tunnels:?}");

    let (code, stdout, _) = run_clean(&app, &["check"], &env);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("proxy: {} (from HTTPS_PROXY)", proxy.url())),
        "{stdout}"
    );

    // NO_PROXY: straight to the server; the proxy sees nothing more.
    let before = proxy.tunnels().len();
    let mut env_np = env.clone();
    env_np.push(("NO_PROXY", "127.0.0.1"));
    sim.http("POST", "/_sim/events", r#"{"count": 5}"#);
    let (code, stdout, stderr) = run_clean(&app, &["collect"], &env_np);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_matches_truth(&app, &sim, "one");
    assert_eq!(proxy.tunnels().len(), before, "NO_PROXY bypasses the proxy");
    assert!(sim.stats()["tls_connections"].as_u64().unwrap() > connections);
}

/// `proxy_url` with `proxy_password_env`: every tunnel carries the credentials; a wrong password
/// fails with its own message; a password written into the URL is refused; and no password, from
/// the config or the environment, appears in any output.
#[test]
fn proxy_credentials_are_used_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (sim, https) = start_sim(&pki, false, "200");
    let password = "pr0xy-PASSWORD-planted-5e1f";
    let proxy = ConnectProxy::start(Some(("aw-user", password)));
    let proxy_host = proxy.addr.clone();
    let extra = format!(
        "ca_file = {}\nproxy_url = \"http://aw-user@{proxy_host}\"\nproxy_password_env = \"TEST_PROXY_PASSWORD\"\n",
        toml_path(&pki.server_ca)
    );
    let app = App::with_accounts(&[("one", "digicert-one", &https, &extra)]);
    let assert_hidden = |what: &str, stdout: &str, stderr: &str| {
        for (name, text) in [("stdout", stdout), ("stderr", stderr)] {
            assert!(
                !text.contains(password) && !text.contains("wrong-pass-planted"),
                "{what}: a proxy password leaked into {name}:\n{text}"
            );
        }
    };
    let good = [("TEST_PROXY_PASSWORD", password)];
    for args in [
        vec!["collect"],
        vec!["--log-format", "json", "collect"],
        vec!["check"],
        vec!["status"],
    ] {
        let (code, stdout, stderr) = run_clean(&app, &args, &good);
        assert_eq!(code, Some(0), "{args:?}: {stdout}\n{stderr}");
        assert_hidden(&format!("{args:?}"), &stdout, &stderr);
    }
    assert_matches_truth(&app, &sim, "one");
    let tunnels = proxy.tunnels();
    assert!(!tunnels.is_empty());
    assert!(
        tunnels.iter().all(|t| t.auth.is_some()),
        "every tunnel authenticated: {tunnels:?}"
    );
    assert!(
        !file_contains(&app.db, password),
        "password in the database"
    );

    // A wrong password: the proxy's 407 says what to fix, without the password.
    let (code, stdout, stderr) = run_clean(
        &app,
        &["collect"],
        &[("TEST_PROXY_PASSWORD", "wrong-pass-planted")],
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        line_of(&stdout, "one").contains("requires authorization (407)"),
        "{stdout}"
    );
    assert_hidden("wrong password", &stdout, &stderr);

    // A proxy that is not there: a network error, still without the password.
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let unreachable = App::with_accounts(&[(
        "one",
        "digicert-one",
        &https,
        &format!(
            "ca_file = {}\nproxy_url = \"http://aw-user@{gone}\"\nproxy_password_env = \"TEST_PROXY_PASSWORD\"\nmax_retries = 0\n",
            toml_path(&pki.server_ca)
        ),
    )]);
    let (code, stdout, stderr) = run_clean(&unreachable, &["check"], &good);
    assert_eq!(code, Some(1), "{stdout}");
    assert_hidden("unreachable proxy", &stdout, &stderr);

    // A password inside proxy_url is refused, and not echoed.
    let inline = App::with_accounts(&[(
        "one",
        "digicert-one",
        &https,
        &format!("proxy_url = \"http://aw-user:{password}@{proxy_host}\"\n"),
    )]);
    let (code, stdout, stderr) = run_clean(&inline, &["check"], &[]);
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("accounts[0].proxy_url: the URL holds a password"),
        "{stderr}"
    );
    assert_hidden("inline password", &stdout, &stderr);

    // The environment's convention (user:password in HTTPS_PROXY) works and stays hidden.
    let plain = App::with_accounts(&[(
        "one",
        "digicert-one",
        &https,
        &format!("ca_file = {}\n", toml_path(&pki.server_ca)),
    )]);
    let env_url = format!("http://aw-user:{password}@{proxy_host}");
    let before = proxy.tunnels().len();
    for args in [vec!["collect"], vec!["check"]] {
        let (code, stdout, stderr) = run_clean(&plain, &args, &[("HTTPS_PROXY", &env_url)]);
        assert_eq!(code, Some(0), "{args:?}: {stdout}\n{stderr}");
        assert_hidden("HTTPS_PROXY", &stdout, &stderr);
    }
    assert!(proxy.tunnels().len() > before);
}

/// `check` warns 30 days before a client certificate expires, and the daemon's /metrics carries
/// the expiry time for monitoring.
#[test]
fn expiring_client_certificate_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (_sim, https) = start_sim(&pki, true, "50");
    let soon = identity(dir.path(), "soon", &pki.client_ca, -300, 10);
    let extra = format!(
        "client_cert_file = {}\nca_file = {}\n",
        toml_path(&soon),
        toml_path(&pki.server_ca)
    );
    let app = App::with_accounts(&[("one", "digicert-one", &https, &extra)]);
    let (code, stdout, _) = run_clean(&app, &["check"], &[]);
    assert_eq!(code, Some(0), "a warning is not a failure: {stdout}");
    assert!(
        stdout.contains(&format!(
            "WARNING: the client certificate {} (CN=auditwarden soon) expires on {} 00:00 UTC",
            soon.display(),
            day(10)
        )),
        "{stdout}"
    );
    app.add_config(
        "[schedule]\ncollect = \"\"\npoll_invites = \"\"\ndeliver_alerts = \"\"\n[daemon]\nlisten = \"127.0.0.1:0\"\n",
    );
    let _ = run_clean(&app, &["collect"], &[]);
    let d = app.start_daemon();
    let expiry = day(10).and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp() as f64;
    let samples = d.get_metrics();
    assert_eq!(
        metric(
            &samples,
            "auditwarden_client_cert_expiry_timestamp_seconds",
            &[("account", "one")]
        ),
        expiry,
        "{samples:?}"
    );
}

/// The webhook and Slack sinks take `[alerts] ca_file` and `proxy_url` of their own: a receiver
/// behind a private CA is reached through the proxy with them, and refused with `[collection]`'s
/// alone. (The receiver is the HTTPS simulator's `POST /_sim/freeze`, which answers 2xx.)
#[test]
fn alert_sinks_take_their_own_tls_and_proxy_keys() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (sim, https) = start_sim(&pki, false, "10");
    let proxy = ConnectProxy::start(None);
    let ca = toml_path(&pki.server_ca);
    let sink = format!(
        "[[alerts.sinks]]\nname = \"soc\"\nkind = \"webhook\"\nurl = \"{https}/_sim/freeze\"\nsecret_env = \"TEST_API_KEY\"\n"
    );
    let own = App::with_accounts(&[("one", "digicert-one", &https, "")]);
    own.add_config(&format!(
        "[alerts]\nmax_attempts = 1\nca_file = {ca}\nproxy_url = \"{}\"\n{sink}",
        proxy.url()
    ));
    assert_eq!(sim.stats()["frozen"], false);
    let (code, stdout, stderr) = run_clean(&own, &["alerts", "test", "--sink", "soc"], &[]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("delivered to soc"), "{stdout}");
    assert_eq!(sim.stats()["frozen"], true, "the receiver got the alert");
    let authority = https.trim_start_matches("https://");
    let tunnels = proxy.tunnels();
    assert_eq!(tunnels.len(), 1, "{tunnels:?}");
    assert_eq!(tunnels[0].target, authority);

    // [collection]'s ca_file is not [alerts]': the sink does not trust the receiver.
    let borrowed =
        App::with_accounts(&[("one", "digicert-one", &https, &format!("ca_file = {ca}\n"))]);
    borrowed.add_config(&format!("[alerts]\nmax_attempts = 1\n{sink}"));
    let (code, stdout, stderr) = run_clean(&borrowed, &["alerts", "test", "--sink", "soc"], &[]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let port = https.rsplit(':').next().unwrap();
    assert!(
        stderr.contains(&format!(
            "the server certificate of 127.0.0.1:{port} is not trusted: none of the roots set by [alerts] tls_roots and ca_file issued it"
        )),
        "{stderr}"
    );
    assert_eq!(
        proxy.tunnels().len(),
        1,
        "no proxy configured for this sink"
    );
}
