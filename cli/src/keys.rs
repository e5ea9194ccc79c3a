//! Signing keys on the operator's machine: generating a key pair, writing it as PEM files, and
//! reading the private key to sign with. Reading any key file is `fota_server::keys`, which the
//! server shares for its trusted keys; everything that makes or writes a key lives here, with the
//! operator, never in the server.

use crate::atomic;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::{SigningKey, VerifyingKey};
pub use fota_server::keys::{load_key, load_trusted_key, parse_key_pem, KeyFile, KeyFileError};
use pkcs8::der::pem::LineEnding;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Why a signing key could not be made, written or read.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The key file could not be read or understood.
    #[error(transparent)]
    Read(#[from] KeyFileError),
    /// A public key where a private key is needed.
    #[error("{} is a public key; signing needs the private key", .path.display())]
    NotPrivate {
        /// The key file.
        path: PathBuf,
    },
    /// `keygen` would overwrite a file.
    #[error("{} already exists (use --force to overwrite)", .path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// The operating system's random number generator failed.
    #[error("cannot get random bytes for a key: {0}")]
    Random(getrandom::Error),
    /// A key could not be encoded.
    #[error("cannot encode key: {0}")]
    Encode(String),
    /// A key file could not be written.
    #[error("cannot write {}", .path.display())]
    Write {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

/// Read a private key to sign with.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, SigningKeyError> {
    match load_key(path)? {
        KeyFile::Private(key) => Ok(key),
        KeyFile::Public(_) => Err(SigningKeyError::NotPrivate {
            path: path.to_owned(),
        }),
    }
}

/// A new key from 32 bytes of the operating system's randomness.
pub fn generate() -> Result<SigningKey, SigningKeyError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(seed.as_mut()).map_err(SigningKeyError::Random)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The private key as a PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`).
///
/// v1 (the seed only) rather than the v2 that `to_pkcs8_pem` writes: it is what OpenSSL and
/// Python `cryptography` write for Ed25519, so it is what every tool in the chain expects.
pub fn private_key_pem(key: &SigningKey) -> Result<Zeroizing<String>, SigningKeyError> {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let keypair = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    keypair
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| SigningKeyError::Encode(e.to_string()))
}

/// The public key as a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, SigningKeyError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| SigningKeyError::Encode(e.to_string()))
}

/// Where `keygen --out <path>` puts the public key: `.pem` becomes `.pub.pem`, any other name
/// gets `.pub.pem` appended.
pub fn public_key_path(private: &Path) -> PathBuf {
    let name = private.as_os_str().to_string_lossy();
    match name.strip_suffix(".pem") {
        Some(stem) if !stem.is_empty() && !stem.ends_with('/') => {
            PathBuf::from(format!("{stem}.pub.pem"))
        }
        _ => {
            let mut path = private.as_os_str().to_owned();
            path.push(".pub.pem");
            PathBuf::from(path)
        }
    }
}

/// Write `key` to `private_path` (mode 0600) and its public key next to it (see
/// [`public_key_path`]); returns the public key's path. Each file is written to a temporary file
/// in the same directory and renamed into place, so a crash never leaves half a key. Without
/// `force`, refuses if either file exists.
pub fn write_key_pair(
    key: &SigningKey,
    private_path: &Path,
    force: bool,
) -> Result<PathBuf, SigningKeyError> {
    let public_path = public_key_path(private_path);
    if !force {
        for path in [private_path, public_path.as_path()] {
            if fs::symlink_metadata(path).is_ok() {
                return Err(SigningKeyError::Exists {
                    path: path.to_owned(),
                });
            }
        }
    }
    let private_pem = private_key_pem(key)?;
    let public_pem = public_key_pem(&key.verifying_key())?;
    write_key_file(private_path, private_pem.as_bytes(), 0o600, force)?;
    write_key_file(&public_path, public_pem.as_bytes(), 0o644, force)?;
    Ok(public_path)
}

fn write_key_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    force: bool,
) -> Result<(), SigningKeyError> {
    atomic::write_atomic(path, contents, mode, force).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            SigningKeyError::Exists {
                path: path.to_owned(),
            }
        } else {
            SigningKeyError::Write {
                path: path.to_owned(),
                source,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pkcs8::der::pem;

    #[test]
    fn public_key_path_replaces_pem_or_appends() {
        assert_eq!(public_key_path(Path::new("k.pem")), Path::new("k.pub.pem"));
        assert_eq!(
            public_key_path(Path::new("/x/y/release.pem")),
            Path::new("/x/y/release.pub.pem")
        );
        assert_eq!(public_key_path(Path::new("key")), Path::new("key.pub.pem"));
        assert_eq!(
            public_key_path(Path::new("dir/.pem")),
            Path::new("dir/.pem.pub.pem")
        );
    }

    #[test]
    fn pem_round_trip_private_and_public() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let private = private_key_pem(&key).unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        match parse_key_pem(Path::new("k"), private.as_bytes()).unwrap() {
            KeyFile::Private(k) => assert_eq!(k.to_bytes(), key.to_bytes()),
            KeyFile::Public(_) => panic!("expected a private key"),
        }
        // v1: 48 bytes of DER (version 0, no public key).
        let (_, der) = pem::decode_vec(private.as_bytes()).unwrap();
        assert_eq!(der.len(), 48);
        assert_eq!(der[4], 0, "PKCS#8 version 0 (v1)");

        let public = public_key_pem(&key.verifying_key()).unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        match parse_key_pem(Path::new("k"), public.as_bytes()).unwrap() {
            KeyFile::Public(k) => assert_eq!(k, key.verifying_key()),
            KeyFile::Private(_) => panic!("expected a public key"),
        }
    }
}
