//! The only code that knows DigiCert's JSON and HTTP conventions (contract: `../shared/digicert-api.md`).
//!
//! - [`client`]: [`Client`], one per account: throttle, bounded retries, status-to-error mapping.
//! - [`wire`]: lenient parsing of pages, events and error bodies into domain types.
//! - [`report`]: CertCentral's audit log through the Report Library: reports, runs, downloads
//!   (JSON or ZIP, split parts), rows parsed leniently and turned into events.
//! - [`users`]: user objects of both APIs and role details of audit events.
//! - [`throttle`]: fixed windows where limits are known, an adaptive pace learned from 429s.
//! - [`settings`]: an account's settings (endpoint and DigiCert's host names, credential,
//!   collection limits) and the TLS and proxy settings of every client, with their parsing.
//! - [`error`]: [`ApiError`], which knows whether it is worth retrying.
//! - [`counters`]: every request of the process by account, endpoint and status, for `/metrics`.
//! - [`tls`]: trust anchors (`tls_roots`, `ca_file`), proxies and mTLS identities for every
//!   outgoing client, and the sentence that explains a failed handshake.

pub mod client;
pub mod counters;
pub mod error;
pub mod report;
pub mod settings;
pub mod throttle;
pub mod tls;
pub mod users;
pub mod wire;

pub use client::{AuditQuery, Client, RequestStats};
pub use error::ApiError;
pub use wire::{AuditEvent, AuditPage, Malformed, ParsedEvent};
