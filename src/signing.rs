//! Ed25519 keys and detached signatures for what auditwarden hands to auditors (report
//! manifests). Keys are stored in the standard formats OpenSSL reads and writes: the private key
//! as PKCS#8 PEM (`BEGIN PRIVATE KEY`), the public key as SubjectPublicKeyInfo PEM
//! (`BEGIN PUBLIC KEY`), so an auditor can check a signature without auditwarden. A signature is
//! the 64 bytes in lowercase hex.
//!
//! Callers: `auditwarden keygen` ([`generate`], [`write_private_key`], [`public_key_pem`]); the
//! reports code signs a manifest with [`sign_manifest`]; `verify-report` checks it with
//! [`verify_manifest`].

use std::io::Write;
use std::path::Path;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer};
pub use ed25519_dalek::{SigningKey, VerifyingKey};

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not an Ed25519 private key in PKCS#8 PEM (as written by `auditwarden keygen`)")]
    BadPrivateKey(String),
    #[error("not an Ed25519 public key (expected PEM `BEGIN PUBLIC KEY`, or 64 hex digits)")]
    BadPublicKey,
    #[error("cannot encode the key: {0}")]
    Encode(String),
    #[error("the signature is not 128 hex digits")]
    BadSignature,
    #[error("the signature does not match: the manifest was changed or signed with another key")]
    Mismatch,
}

/// A new key from the operating system's random source.
pub fn generate() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// Write the private key as PKCS#8 PEM to a new file readable by its owner only (0600). Refuses
/// to overwrite an existing file: replacing a signing key is a decision, not a side effect.
pub fn write_private_key(path: &Path, key: &SigningKey) -> Result<(), SigningError> {
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| SigningError::Encode(e.to_string()))?;
    let io = |source| SigningError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(pem.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Read a private key file (a plain file or a systemd credential) written by `keygen`.
pub fn load_private_key(path: &Path) -> Result<SigningKey, SigningError> {
    let text = std::fs::read_to_string(path).map_err(|source| SigningError::Io {
        path: path.display().to_string(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(text.trim())
        .map_err(|_| SigningError::BadPrivateKey(path.display().to_string()))
}

/// The public key as SubjectPublicKeyInfo PEM, for auditors.
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, SigningError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| SigningError::Encode(e.to_string()))
}

/// A public key given as PEM (`BEGIN PUBLIC KEY`) or as the 32 raw bytes in hex.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, SigningError> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(text).map_err(|_| SigningError::BadPublicKey);
    }
    let bytes: [u8; 32] = hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SigningError::BadPublicKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| SigningError::BadPublicKey)
}

/// Sign a manifest's exact bytes; returns the detached signature in hex.
pub fn sign_manifest(manifest: &[u8], key: &SigningKey) -> String {
    hex::encode(key.sign(manifest).to_bytes())
}

/// Check a detached hex signature over a manifest's exact bytes. Uses strict verification (no
/// malleable or small-order signatures).
pub fn verify_manifest(
    manifest: &[u8],
    signature_hex: &str,
    key: &VerifyingKey,
) -> Result<(), SigningError> {
    let bytes: [u8; 64] = hex::decode(signature_hex.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SigningError::BadSignature)?;
    key.verify_strict(manifest, &Signature::from_bytes(&bytes))
        .map_err(|_| SigningError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key written by keygen loads back, is 0600, is never overwritten, and signs what verifies.
    #[test]
    fn keys_round_trip_and_signatures_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.pem");
        let key = generate();
        write_private_key(&path, &key).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(write_private_key(&path, &generate()).is_err());
        let loaded = load_private_key(&path).unwrap();
        assert_eq!(loaded.to_bytes(), key.to_bytes());

        let public = public_key_pem(&key.verifying_key()).unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
        let vk = parse_public_key(&public).unwrap();
        assert_eq!(parse_public_key(&hex::encode(vk.to_bytes())).unwrap(), vk);

        let manifest = br#"{"files":[]}"#;
        let sig = sign_manifest(manifest, &loaded);
        verify_manifest(manifest, &sig, &vk).unwrap();
    }

    /// A changed manifest, a changed signature or another key fails.
    #[test]
    fn tampering_or_a_wrong_key_fails() {
        let key = generate();
        let vk = key.verifying_key();
        let sig = sign_manifest(b"manifest v1", &key);
        assert!(matches!(
            verify_manifest(b"manifest v2", &sig, &vk),
            Err(SigningError::Mismatch)
        ));
        assert!(matches!(
            verify_manifest(b"manifest v1", &sig, &generate().verifying_key()),
            Err(SigningError::Mismatch)
        ));
        let mut flipped = sig.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(verify_manifest(b"manifest v1", &flipped, &vk).is_err());
        assert!(matches!(
            verify_manifest(b"manifest v1", "zz", &vk),
            Err(SigningError::BadSignature)
        ));
        assert!(parse_public_key("not a key").is_err());
    }

    /// A file that is not a key is refused with its path.
    #[test]
    fn a_bad_key_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notakey.pem");
        std::fs::write(&path, "hello").unwrap();
        let e = load_private_key(&path).err().unwrap().to_string();
        assert!(e.contains("notakey.pem"), "{e}");
    }
}
