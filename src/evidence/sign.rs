//! Ed25519 keys for signed checkpoints: a PKCS#8 PEM private key (`residency-proxy keygen`),
//! an SPKI PEM public key for `verify --key`, and the key id both sides name.

use std::fmt;
use std::path::Path;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, Verifier};

use super::chain::{Link, sha256_hex};
use super::line::{End, checkpoint_message};

/// Why a key could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The key file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not a key of the expected kind.
    #[error("{what}: {reason}")]
    Parse {
        /// The key file, or what was parsed.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The system random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// The id of a public key: hex SHA-256 of its 32 raw bytes.
fn key_id(public: &ed25519_dalek::VerifyingKey) -> String {
    sha256_hex(public.as_bytes())
}

/// An Ed25519 private key for signing checkpoints. Its `Debug` shows the key id only.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    id: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).finish()
    }
}

impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for SigningKey {}

impl SigningKey {
    /// A new key from the system's random source.
    pub fn generate() -> Result<SigningKey, KeyError> {
        use ring::rand::SecureRandom;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|e| KeyError::Random(e.to_string()))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(Self::from_dalek(key))
    }

    fn from_dalek(key: ed25519_dalek::SigningKey) -> SigningKey {
        let id = key_id(&key.verifying_key());
        SigningKey { key, id }
    }

    /// Parse a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`); `what` names it in errors.
    pub fn from_pem(pem: &str, what: &str) -> Result<SigningKey, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self::from_dalek)
            .map_err(|e| KeyError::Parse {
                what: what.to_owned(),
                reason: format!("not an Ed25519 PKCS#8 PEM private key ({e})"),
            })
    }

    /// Read a PKCS#8 PEM private key file.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&text, &path.display().to_string())
    }

    /// The key as PKCS#8 PEM (wiped from memory when dropped).
    pub fn to_pem(&self) -> Result<zeroize::Zeroizing<String>, KeyError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Parse {
                what: "new key".into(),
                reason: e.to_string(),
            })
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
            id: self.id.clone(),
        }
    }

    /// The key id: hex SHA-256 of the raw public key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sign a checkpoint over `seq` and `chain` (the line before the checkpoint); 128 hex.
    pub fn sign_checkpoint(&self, seq: u64, chain: &Link, end: End) -> String {
        let sig = self
            .key
            .sign(&checkpoint_message(&self.id, seq, chain, end));
        hex::encode(sig.to_bytes())
    }
}

/// An Ed25519 public key for checking checkpoint signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
    id: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("id", &self.id).finish()
    }
}

impl PublicKey {
    /// Parse an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`); `what` names it in errors.
    pub fn from_pem(pem: &str, what: &str) -> Result<PublicKey, KeyError> {
        let key =
            ed25519_dalek::VerifyingKey::from_public_key_pem(pem).map_err(|e| KeyError::Parse {
                what: what.to_owned(),
                reason: format!("not an Ed25519 SPKI PEM public key ({e})"),
            })?;
        let id = key_id(&key);
        Ok(PublicKey { key, id })
    }

    /// Read an SPKI PEM public key file.
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&text, &path.display().to_string())
    }

    /// The key as SPKI PEM.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError::Parse {
                what: "public key".into(),
                reason: e.to_string(),
            })
    }

    /// The key id: hex SHA-256 of the raw public key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether `sig` (128 hex) is this key's signature of the checkpoint over `seq` and `chain`.
    pub fn verify_checkpoint(&self, seq: u64, chain: &Link, end: End, sig: &str) -> bool {
        let mut bytes = [0u8; 64];
        if hex::decode_to_slice(sig, &mut bytes).is_err() {
            return false;
        }
        let sig = Signature::from_bytes(&bytes);
        self.key
            .verify(&checkpoint_message(&self.id, seq, chain, end), &sig)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::chain::GENESIS;

    #[test]
    fn a_key_round_trips_through_pem_and_signs_what_its_public_half_checks() {
        let key = SigningKey::generate().unwrap();
        let back = SigningKey::from_pem(&key.to_pem().unwrap(), "key").unwrap();
        assert_eq!(back.id(), key.id());
        let public = PublicKey::from_pem(&key.public().to_pem().unwrap(), "pub").unwrap();
        assert_eq!(public.id(), key.id());
        assert_eq!(public.id().len(), 64);
        let sig = key.sign_checkpoint(5, &GENESIS, End::Final);
        assert!(public.verify_checkpoint(5, &GENESIS, End::Final, &sig));
        assert!(!public.verify_checkpoint(6, &GENESIS, End::Final, &sig));
        assert!(!public.verify_checkpoint(5, &GENESIS, End::None, &sig));
        assert!(!public.verify_checkpoint(5, &GENESIS, End::Final, "00"));
        let other = SigningKey::generate().unwrap().public();
        assert!(!other.verify_checkpoint(5, &GENESIS, End::Final, &sig));
    }

    #[test]
    fn a_public_key_is_not_a_private_key() {
        let key = SigningKey::generate().unwrap();
        let public = key.public().to_pem().unwrap();
        assert!(SigningKey::from_pem(&public, "k").is_err());
        assert!(PublicKey::from_pem(&key.to_pem().unwrap(), "p").is_err());
        assert!(SigningKey::from_pem("garbage", "k").is_err());
    }
}
