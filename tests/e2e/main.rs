//! End-to-end tests: the real `auditwarden` binary against the built-in simulator over real HTTP
//! on loopback, with real SQLite files in temporary directories.

// A failed assertion or a broken fixture panics: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod alerts;
mod chain;
mod collect;
mod config_errors;
mod contract;
mod crash;
mod credentials;
mod daemon;
mod demo;
mod messages;
mod postgres;
mod report_library;
mod reports;
mod review;
mod secrets;
mod signed_reports;
mod tls;
mod users;
