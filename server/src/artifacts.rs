//! The artifact store: signed images on disk, named by the SHA-256 of their bytes.
//!
//! Content addressing makes every file immutable (a new image is a new name), so downloads can be
//! cached forever and resumed with Range from any replica or CDN. Files are written to a
//! temporary name and renamed, so a crash never leaves a half-written artifact under a real name.

use fota_protocol::image::Digest;
use std::io;
use std::path::{Path, PathBuf};

/// Artifacts under one directory.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
}

/// Whether `s` is a well-formed artifact address: 64 lowercase hex digits, nothing else, so it
/// can never name a path outside the store.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ArtifactStore {
    /// The store under `dir` (created if missing).
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Where the artifact with this address lives. Only call with a checked address.
    pub fn path(&self, sha256: &str) -> PathBuf {
        debug_assert!(is_sha256_hex(sha256));
        self.dir.join(sha256)
    }

    /// Store `bytes`; returns their address. Storing the same bytes twice is a no-op.
    pub async fn put(&self, bytes: &[u8]) -> io::Result<String> {
        let sha = Digest::of(bytes).to_string();
        let path = self.path(&sha);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(sha);
        }
        let dir = self.dir.clone();
        let bytes = bytes.to_vec();
        let target = path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&dir, &target, &bytes))
            .await
            .map_err(io::Error::other)??;
        Ok(sha)
    }

    /// Remove an artifact no release references any more.
    pub async fn remove(&self, sha256: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.path(sha256)).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

fn write_atomically(dir: &Path, target: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(target).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_hex_addresses_are_valid() {
        assert!(is_sha256_hex(&"a".repeat(64)));
        assert!(!is_sha256_hex(&"A".repeat(64)));
        assert!(!is_sha256_hex(&"a".repeat(63)));
        assert!(!is_sha256_hex("../../../../etc/passwd"));
        assert!(!is_sha256_hex(&format!("{}/", "a".repeat(63))));
    }

    #[tokio::test]
    async fn put_is_content_addressed_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path().join("artifacts")).unwrap();
        let a = store.put(b"image").await.unwrap();
        assert_eq!(a, Digest::of(b"image").to_string());
        assert_eq!(store.put(b"image").await.unwrap(), a);
        assert_eq!(std::fs::read(store.path(&a)).unwrap(), b"image");
        store.remove(&a).await.unwrap();
        store.remove(&a).await.unwrap();
        assert!(!store.path(&a).exists());
    }
}
