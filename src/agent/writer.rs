//! Writes one refresh's files so that the whole set switches at once, the way the kubelet
//! updates Secret volumes:
//!
//! ```text
//! <mount>/..2024_05_01_10_00_00.123456789/<item>   (0440, a fresh directory per refresh)
//! <mount>/..data -> ..2024_05_01_10_00_00.123456789 (swapped with one rename)
//! <mount>/<item> -> ..data/<item>                  (stable names the app opens)
//! <mount>/.secretmode/status.json                  (no values, ever)
//! ```
//!
//! A reader opening `<mount>/<item>` resolves `..data` once, so it sees either the old set or
//! the new set, never a mix and never a half-written file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use thiserror::Error;

pub const DATA_LINK: &str = "..data";
pub const STATUS_DIR: &str = ".secretmode";
pub const STATUS_FILE: &str = "status.json";
const FILE_MODE: u32 = 0o440;
const DIR_MODE: u32 = 0o755;

#[derive(Debug, Error)]
#[error("cannot write {path}: {source}")]
pub struct WriteError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError { path: path.display().to_string(), source }
}

/// Writes every file of `files` (name -> content) into a new timestamped directory under
/// `mount`, then atomically points `..data` at it and removes older sets.
pub fn write_set(mount: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<(), WriteError> {
    fs::create_dir_all(mount).map_err(io_err(mount))?;
    let dir_name = timestamped_dir_name(SystemTime::now());
    let dir = mount.join(&dir_name);
    fs::create_dir(&dir).map_err(io_err(&dir))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io_err(&dir))?;
    let result = (|| {
        for (name, content) in files {
            let path = dir.join(name);
            let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(io_err(&path))?;
            f.write_all(content).map_err(io_err(&path))?;
            f.sync_all().map_err(io_err(&path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(FILE_MODE)).map_err(io_err(&path))?;
        }
        swap_link(mount, DATA_LINK, Path::new(&dir_name))?;
        for name in files.keys() {
            let link = mount.join(name);
            let target = Path::new(DATA_LINK).join(name);
            if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
                swap_link(mount, name, &target)?;
            }
        }
        Ok(())
    })();
    if result.is_err() {
        // Leave the previous set in place and do not leak the half-built directory.
        let _ = fs::remove_dir_all(&dir);
        return result;
    }
    remove_old_sets(mount, &dir_name);
    Ok(())
}

/// Whether a complete set has been written before (the app has files to read).
pub fn has_data(mount: &Path) -> bool {
    fs::metadata(mount.join(DATA_LINK)).map(|m| m.is_dir()).unwrap_or(false)
}

/// Writes the status file (never a value) with a temp file and a rename.
pub fn write_status(mount: &Path, json: &[u8]) -> Result<(), WriteError> {
    let dir = mount.join(STATUS_DIR);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let tmp = dir.join(format!(".{STATUS_FILE}.tmp"));
    let path = dir.join(STATUS_FILE);
    let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(json).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444)).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))
}

pub fn status_path(mount: &Path) -> PathBuf {
    mount.join(STATUS_DIR).join(STATUS_FILE)
}

/// Points `mount/name` at `target` with a temporary link and a rename (atomic on POSIX).
fn swap_link(mount: &Path, name: &str, target: &Path) -> Result<(), WriteError> {
    let tmp = mount.join(format!("{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    symlink(target, &tmp).map_err(io_err(&tmp))?;
    let link = mount.join(name);
    fs::rename(&tmp, &link).map_err(io_err(&link))
}

fn remove_old_sets(mount: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(mount) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("..") && name != DATA_LINK && name != keep {
            if let Err(e) = fs::remove_dir_all(entry.path()) {
                tracing::warn!(dir = %name, error = %e, "cannot remove an old file set");
            }
        }
    }
}

/// `..YYYY_MM_DD_HH_MM_SS.nnnnnnnnn`, the kubelet's format (UTC).
fn timestamped_dir_name(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (date, time) = crate::vocabulary::time::civil(d.as_secs());
    format!(
        "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{:09}",
        date.0,
        date.1,
        date.2,
        time.0,
        time.1,
        time.2,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn writes_files_behind_a_swapped_data_link() {
        let tmp = tempfile::tempdir().unwrap();
        let mount = tmp.path().join("cache");
        write_set(&mount, &set(&[("a", "1"), ("b", "2")])).unwrap();
        assert_eq!(fs::read_to_string(mount.join("a")).unwrap(), "1");
        assert_eq!(fs::read_link(mount.join("a")).unwrap(), Path::new("..data/a"));
        let first = fs::read_link(mount.join(DATA_LINK)).unwrap();
        let mode = fs::metadata(mount.join("b")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o440);

        write_set(&mount, &set(&[("a", "10"), ("b", "20")])).unwrap();
        let second = fs::read_link(mount.join(DATA_LINK)).unwrap();
        assert_ne!(first, second);
        assert_eq!(fs::read_to_string(mount.join("a")).unwrap(), "10");
        assert_eq!(fs::read_to_string(mount.join("b")).unwrap(), "20");
        assert!(!mount.join(&first).exists(), "old set removed");
        let dirs =
            fs::read_dir(&mount).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".."));
        assert_eq!(dirs.count(), 2, "..data plus one timestamped dir");
        assert!(has_data(&mount));
    }

    #[test]
    fn a_failed_write_keeps_the_previous_set() {
        let tmp = tempfile::tempdir().unwrap();
        let mount = tmp.path().join("cache");
        write_set(&mount, &set(&[("a", "good")])).unwrap();
        // A name that cannot be created as a file makes the write fail half-way.
        let bad = set(&[("a", "new"), ("zz/nested", "x")]);
        assert!(write_set(&mount, &bad).is_err());
        assert_eq!(fs::read_to_string(mount.join("a")).unwrap(), "good");
        let dirs =
            fs::read_dir(&mount).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".."));
        assert_eq!(dirs.count(), 2, "no half-built directory left behind");
    }

    #[test]
    fn dir_names_sort_by_time() {
        let a = timestamped_dir_name(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
        assert_eq!(a, "..2023_11_14_22_13_20.000000000");
    }

    #[test]
    fn status_is_replaced_whole() {
        let tmp = tempfile::tempdir().unwrap();
        write_status(tmp.path(), b"{\"state\":\"fresh\"}").unwrap();
        write_status(tmp.path(), b"{\"state\":\"stale\"}").unwrap();
        assert_eq!(fs::read_to_string(status_path(tmp.path())).unwrap(), "{\"state\":\"stale\"}");
    }
}
