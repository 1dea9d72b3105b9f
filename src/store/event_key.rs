//! The integer key that deduplicates audit events on both backends (SQLite's migration
//! `EVENT_KEYS`, PostgreSQL's migration 7): the first 8 bytes of SHA-256 of the event id, as a
//! signed integer. A hash of a fixed definition (it is stored, and `store copy` carries rows
//! between the backends, so both must compute the same key), cheap next to the row it guards,
//! and spread evenly whatever the ids look like (sequential numbers, a shared prefix or suffix),
//! so no id shape makes many rows share a key. Equal keys are still compared by account and id,
//! so a collision costs one row read, never a lost event.

use sha2::{Digest, Sha256};

/// The dedup key of an event id.
pub(crate) fn event_key(event_id: &str) -> i64 {
    let d = Sha256::digest(event_id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_fixed_by_its_definition() {
        // Stored keys must never change meaning: the first 8 bytes of SHA-256("ev-1"), big-endian.
        assert_eq!(event_key("ev-1"), -1_676_084_912_005_953_925);
        assert_ne!(event_key("ev-1"), event_key("ev-2"));
    }
}
