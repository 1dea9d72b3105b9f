//! The built-in DigiCert simulator: serves both APIs of `../shared/digicert-api.md` (DigiCert ONE
//! Account Manager under `/account/api/v1`, CertCentral under `/services/v2`) with deterministic
//! synthetic data and switchable fault injection, plus `/_sim/*` control endpoints that tests use to
//! read the ground truth and to change the world between two collections.
//!
//! It is deliberately independent of `crate::api`: it shares no wire types with the client, so a
//! quirk of one cannot hide a quirk of the other.

use std::future::Future;
use std::sync::Arc;

/// Options for one simulated world. Same options (and seed) give the same world.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    /// Number of audit events generated up front (well-formed plus malformed).
    pub events: usize,
    /// The events span this many days ending now (UTC).
    pub days: u32,
    /// Number of users per account kind.
    pub users: usize,
    pub faults: FaultSpec,
    /// The API key (x-api-key / X-DC-DEVKEY) the simulator accepts.
    pub api_key: String,
    /// Keys that belong to an expired service user (DigiCert ONE: 401 "expired").
    pub expired_api_keys: Vec<String>,
}

/// Which faults are switched on, parsed from `--faults` (see `FaultSpec::parse`).
#[derive(Debug, Clone, Default)]
pub struct FaultSpec {}

impl FaultSpec {
    pub fn parse(spec: &str) -> Result<FaultSpec, String> {
        if spec.trim().is_empty() {
            Ok(FaultSpec::default())
        } else {
            Err(format!("fault injection is not implemented yet: {spec}"))
        }
    }
}

pub struct Simulator {}

impl Simulator {
    pub fn new(_opts: SimOptions) -> Simulator {
        Simulator {}
    }
}

/// Serve the simulator on `listener` until `shutdown` completes.
pub async fn serve(
    _listener: tokio::net::TcpListener,
    _sim: Arc<Simulator>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    shutdown.await;
    Ok(())
}
