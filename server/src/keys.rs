//! Ed25519 keys as PEM files, read: the keys a server trusts (`--trusted-key`), and the keys the
//! operator's tools sign and verify with. Generating and writing keys is the operator CLI's.
//!
//! Private keys are PKCS#8 `PRIVATE KEY` PEMs and public keys SubjectPublicKeyInfo `PUBLIC KEY`
//! PEMs, the forms MCUboot's imgtool reads and writes (Python `cryptography`'s
//! `load_pem_private_key` / `load_pem_public_key`). fota writes private keys as PKCS#8 v1
//! (RFC 5208: the 32-byte seed without the optional public key), which every PKCS#8 reader
//! accepts; it reads both v1 and v2 (RFC 5958, with the public key, which must then match).

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{SigningKey, VerifyingKey};
use fota_protocol::image::{KeyError, TrustedKey};
use pkcs8::der::pem;
use pkcs8::der::Decode;
use pkcs8::{ObjectIdentifier, PrivateKeyInfo};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// `id-Ed25519` (RFC 8410).
const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// PEM label of a PKCS#8 private key.
pub const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";
/// PEM label of a SubjectPublicKeyInfo public key.
pub const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";

/// Why a key file could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read key {}", .path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is not PEM at all.
    #[error("{} is not a PEM key file ({detail})", .path.display())]
    NotPem {
        /// The key file.
        path: PathBuf,
        /// What the PEM decoder said.
        detail: String,
    },
    /// A password-protected PKCS#8 key.
    #[error("{} is an encrypted private key; fota needs an unencrypted Ed25519 key", .path.display())]
    Encrypted {
        /// The key file.
        path: PathBuf,
    },
    /// A PEM that is not a PKCS#8 or SubjectPublicKeyInfo key (e.g. `EC PRIVATE KEY`).
    #[error("{} holds a PEM labelled \"{label}\"; fota needs an Ed25519 \"PRIVATE KEY\" (PKCS#8) or \"PUBLIC KEY\" PEM", .path.display())]
    UnsupportedPem {
        /// The key file.
        path: PathBuf,
        /// The PEM label found.
        label: String,
    },
    /// A well-formed key of another algorithm.
    #[error("{} is not an Ed25519 key (it is {})", .path.display(), algorithm_name(.oid))]
    WrongAlgorithm {
        /// The key file.
        path: PathBuf,
        /// The key's algorithm.
        oid: ObjectIdentifier,
    },
    /// DER that does not decode as the key its label promises.
    #[error("{} is a malformed Ed25519 key ({detail})", .path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What the decoder said.
        detail: String,
    },
    /// A key that may not be trusted (not a curve point, or of small order).
    #[error("{} cannot be trusted", .path.display())]
    Untrusted {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: KeyError,
    },
}

/// A human name for the algorithms operators are likely to hand us by mistake.
fn algorithm_name(oid: &ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.2.840.10045.2.1" => "an EC key",
        "1.2.840.113549.1.1.1" => "an RSA key",
        "1.2.840.113549.1.1.10" => "an RSA-PSS key",
        "1.3.101.110" => "an X25519 key",
        "1.3.101.111" => "an X448 key",
        "1.3.101.113" => "an Ed448 key",
        _ => "a key",
    };
    format!("{name}, algorithm {oid}")
}

/// What a key file holds.
#[derive(Debug)]
pub enum KeyFile {
    /// A private key (which also gives its public key).
    Private(SigningKey),
    /// A public key only.
    Public(VerifyingKey),
}

impl KeyFile {
    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            KeyFile::Private(key) => key.verifying_key(),
            KeyFile::Public(key) => *key,
        }
    }
}

/// Read a private (PKCS#8) or public (SubjectPublicKeyInfo) Ed25519 PEM key file.
pub fn load_key(path: &Path) -> Result<KeyFile, KeyFileError> {
    let text = Zeroizing::new(fs::read(path).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?);
    parse_key_pem(path, &text)
}

/// Parse the contents of a PEM key file; `path` only names it in errors.
pub fn parse_key_pem(path: &Path, text: &[u8]) -> Result<KeyFile, KeyFileError> {
    let not_pem = |e: pem::Error| KeyFileError::NotPem {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    let malformed = |detail: String| KeyFileError::Malformed {
        path: path.to_owned(),
        detail,
    };
    // PEM files may carry comments or "explanatory text" before the armour (RFC 7468 section 5.2).
    let start = find(text, b"-----BEGIN ").ok_or_else(|| KeyFileError::NotPem {
        path: path.to_owned(),
        detail: "no \"-----BEGIN\" line".to_owned(),
    })?;
    let text = &text[start..];
    let label = pem::decode_label(text).map_err(not_pem)?;
    match label {
        PRIVATE_KEY_LABEL => {
            let (_, der) = pem::decode_vec(text).map_err(not_pem)?;
            let der = Zeroizing::new(der);
            let info = PrivateKeyInfo::from_der(&der).map_err(|e| malformed(e.to_string()))?;
            if info.algorithm.oid != ED25519_OID {
                return Err(KeyFileError::WrongAlgorithm {
                    path: path.to_owned(),
                    oid: info.algorithm.oid,
                });
            }
            let key = SigningKey::from_pkcs8_der(&der).map_err(|e| malformed(e.to_string()))?;
            Ok(KeyFile::Private(key))
        }
        PUBLIC_KEY_LABEL => {
            let (_, der) = pem::decode_vec(text).map_err(not_pem)?;
            let spki = pkcs8::spki::SubjectPublicKeyInfoRef::from_der(&der)
                .map_err(|e| malformed(e.to_string()))?;
            if spki.algorithm.oid != ED25519_OID {
                return Err(KeyFileError::WrongAlgorithm {
                    path: path.to_owned(),
                    oid: spki.algorithm.oid,
                });
            }
            if spki.algorithm.parameters.is_some() {
                return Err(malformed(
                    "Ed25519 takes no algorithm parameters".to_owned(),
                ));
            }
            let bytes: [u8; 32] = spki
                .subject_public_key
                .as_bytes()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| malformed("the public key is not 32 bytes".to_owned()))?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyFileError::Untrusted {
                path: path.to_owned(),
                source: KeyError::Invalid,
            })?;
            Ok(KeyFile::Public(key))
        }
        "ENCRYPTED PRIVATE KEY" => Err(KeyFileError::Encrypted {
            path: path.to_owned(),
        }),
        other => Err(KeyFileError::UnsupportedPem {
            path: path.to_owned(),
            label: other.to_owned(),
        }),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Read a private or public key to verify with. Small-order keys are refused.
pub fn load_trusted_key(path: &Path) -> Result<TrustedKey, KeyFileError> {
    let key = load_key(path)?.verifying_key();
    TrustedKey::from_bytes(&key.to_bytes()).map_err(|source| KeyFileError::Untrusted {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pkcs8::der::pem::LineEnding;

    #[test]
    fn reads_pkcs8_v2_as_dalek_writes_it() {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let key = SigningKey::from_bytes(&[9; 32]);
        let v2 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let loaded = load_signing_key_from(v2.as_bytes()).unwrap();
        assert_eq!(loaded.to_bytes(), key.to_bytes());
    }

    fn load_signing_key_from(text: &[u8]) -> Result<SigningKey, KeyFileError> {
        match parse_key_pem(Path::new("k"), text)? {
            KeyFile::Private(k) => Ok(k),
            KeyFile::Public(_) => panic!("public"),
        }
    }

    #[test]
    fn refuses_other_pems_and_garbage() {
        let p = Path::new("k.pem");
        assert!(matches!(
            parse_key_pem(p, b"hello"),
            Err(KeyFileError::NotPem { .. })
        ));
        let ec = b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        assert!(matches!(
            parse_key_pem(p, ec),
            Err(KeyFileError::UnsupportedPem { .. })
        ));
        let enc =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(
            parse_key_pem(p, enc),
            Err(KeyFileError::Encrypted { .. })
        ));
        let bad = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            parse_key_pem(p, bad),
            Err(KeyFileError::Malformed { .. })
        ));
    }

    #[test]
    fn small_order_public_keys_are_not_trusted() {
        // The identity point (y = 1) has order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let pem = pem::encode_string(
            PUBLIC_KEY_LABEL,
            LineEnding::LF,
            &fota_protocol::image::spki_der(&identity),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weak.pub.pem");
        fs::write(&path, pem).unwrap();
        assert!(matches!(
            load_trusted_key(&path),
            Err(KeyFileError::Untrusted {
                source: KeyError::SmallOrder,
                ..
            })
        ));
    }
}
