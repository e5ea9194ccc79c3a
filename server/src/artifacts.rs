//! The artifact store: signed images on disk, named by the SHA-256 of their bytes.
//!
//! Content addressing makes every file immutable (a new image is a new name), so downloads can be
//! cached forever and resumed with Range from any replica or CDN. Files are written to a
//! temporary name and renamed, so a crash never leaves a half-written artifact under a real name.
//!
//! The files under the data directory are each replica's own copy (and the source a CDN mirrors);
//! the bytes of record are in the database, stored with their release, so that a replica on
//! another host, which never saw the upload, serves them too: it [`adopt`](ArtifactStore::adopt)s
//! them on the first request.
//!
//! Immutability also makes them safe to keep in memory: a file up to [`MAX_CACHED_FILE`] is read
//! once and then served from RAM (a whole fleet downloads the same two images), within a
//! [`CACHE_BYTES`] budget. Larger files are streamed from disk in chunks.

use axum::body::Bytes;
use fota_protocol::image::Digest;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Largest file kept in memory (images are at most a 256 KB slot).
pub const MAX_CACHED_FILE: u64 = 1024 * 1024;
/// Memory for cached artifacts.
pub const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Artifacts under one directory.
#[derive(Debug)]
pub struct ArtifactStore {
    dir: PathBuf,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    files: HashMap<String, Bytes>,
    bytes: usize,
}

/// An artifact's bytes, from memory or from disk.
#[derive(Debug)]
pub enum ArtifactSource {
    /// Cached whole.
    Memory(Bytes),
    /// Too large to cache: an open file.
    File(tokio::fs::File),
}

/// An artifact ready to serve.
#[derive(Debug)]
pub struct Artifact {
    /// Its size.
    pub size: u64,
    /// Its bytes.
    pub source: ArtifactSource,
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
        Ok(Self {
            dir,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// Open an artifact for serving; `None` if there is no such file.
    pub async fn get(&self, sha256: &str) -> io::Result<Option<Artifact>> {
        if let Some(bytes) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .files
            .get(sha256)
            .cloned()
        {
            return Ok(Some(Artifact {
                size: bytes.len() as u64,
                source: ArtifactSource::Memory(bytes),
            }));
        }
        let path = self.path(sha256);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = file.metadata().await?.len();
        if size > MAX_CACHED_FILE {
            return Ok(Some(Artifact {
                size,
                source: ArtifactSource::File(file),
            }));
        }
        let bytes = Bytes::from(tokio::fs::read(&path).await?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Over budget: drop entries until it fits (artifacts are few; any victim will do).
        while cache.bytes + bytes.len() > CACHE_BYTES {
            let Some(victim) = cache.files.keys().next().cloned() else {
                break;
            };
            if let Some(old) = cache.files.remove(&victim) {
                cache.bytes -= old.len();
            }
        }
        if cache
            .files
            .insert(sha256.to_string(), bytes.clone())
            .is_none()
        {
            cache.bytes += bytes.len();
        }
        Ok(Some(Artifact {
            size: bytes.len() as u64,
            source: ArtifactSource::Memory(bytes),
        }))
    }

    /// Take bytes fetched from elsewhere (the database) under their address: checked against
    /// it, kept in memory and written under the directory for next time. `None` if the bytes
    /// do not hash to `sha256`.
    pub async fn adopt(&self, sha256: &str, bytes: Vec<u8>) -> io::Result<Option<Artifact>> {
        if Digest::of(&bytes).to_string() != sha256 {
            return Ok(None);
        }
        self.put(&bytes).await?;
        self.get(sha256).await
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
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = cache.files.remove(sha256) {
                cache.bytes -= old.len();
            }
        }
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
        let served = store.get(&a).await.unwrap().unwrap();
        assert!(matches!(served.source, ArtifactSource::Memory(ref b) if b.as_ref() == b"image"));
        store.remove(&a).await.unwrap();
        store.remove(&a).await.unwrap();
        assert!(!store.path(&a).exists());
        assert!(
            store.get(&a).await.unwrap().is_none(),
            "removed from the cache too"
        );
    }
}
