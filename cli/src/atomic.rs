//! Writing files atomically: a temporary file in the same directory, renamed into place, so a
//! crash or a full disk never leaves a half-written key or image under the final name.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Write `contents` to `path` through a temporary file in the same directory and a rename.
///
/// The temporary file is created with mode 0600 (nobody else can read a private key while it is
/// being written) and set to `mode` before the rename. Without `overwrite`, an existing `path`
/// is left alone and the error has kind [`io::ErrorKind::AlreadyExists`].
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32, overwrite: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".fota-tmp-")
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.as_file().sync_all()?;
    let persisted = if overwrite {
        tmp.persist(path)
    } else {
        tmp.persist_noclobber(path)
    };
    // On error the temporary file is dropped, which deletes it.
    persisted.map(|_| ()).map_err(|e| e.error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replaces_or_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one", 0o600, false).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        let e = write_atomic(&path, b"two", 0o600, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_atomic(&path, b"three", 0o644, true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        // No temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
