//! `secretmode render`: the `secretmode-render` init container of `eso`/`csi` pods with
//! rendered files, and the re-render the watcher does on each `..data` swap.
//!
//! The items' files are the read-only Secret or CSI volume (item name = file name). They are
//! read through one resolution of its `..data` link, so one render sees one generation of the
//! volume even while the kubelet swaps it; the rendered files are written with the agent's
//! writer (`..data` layout, one swap), so the app sees a whole set or the previous one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::rooted;
use super::spec::RenderSpec;
use super::writer::{self, DATA_LINK};
use crate::logging::printable::Printable;
use crate::render::{render_all, RenderSource, RenderedFile, Template};
use crate::vocabulary::paths::RENDER_SPEC_ENV;

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The render spec JSON written by the webhook.
    #[arg(long, env = RENDER_SPEC_ENV, hide_env_values = true)]
    pub spec: String,
    /// Prefix for the source and destination directories, for local runs and tests outside a
    /// pod.
    #[arg(long, env = "SECRETMODE_RENDER_ROOT")]
    pub root: Option<PathBuf>,
}

/// Why a render did not happen; `file` is the rendered file when one is to blame. Never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub file: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What one render did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The source's `..data` target the items were read from (None: a plain directory).
    pub source_target: Option<String>,
    /// Whether a new set was written (false: the rendered files already held these bytes).
    pub written: bool,
    /// Whether a set was there before (the app may have read it).
    pub replaced: bool,
}

/// The item names the files read: a template's items, a bundle's list.
fn needed_items(files: &[RenderedFile]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in files {
        match &f.source {
            // One that does not parse is reported by `render_all`, with its position.
            RenderSource::Template(text) => {
                if let Ok(t) = Template::parse(text) {
                    out.extend(t.items().into_iter().map(String::from));
                }
            }
            RenderSource::Bundle { items, .. } => out.extend(items.iter().cloned()),
        }
    }
    out
}

/// Reads the `names` files of `dir` through one resolution of `..data` (the whole directory
/// when there is no `..data`). A file that is not there is left out (the render names it). A
/// swap during the read (the old generation removed under us) is retried a few times.
fn read_items(dir: &Path, names: &BTreeSet<String>) -> Result<Source, String> {
    let mut last = String::new();
    for _ in 0..5 {
        let target = std::fs::read_link(dir.join(DATA_LINK)).ok().map(|t| t.to_string_lossy().into_owned());
        let base = match &target {
            Some(t) => dir.join(t),
            None => dir.to_path_buf(),
        };
        let mut items = BTreeMap::new();
        let mut failed = None;
        for name in names {
            match std::fs::read(base.join(name)) {
                Ok(bytes) => {
                    items.insert(name.clone(), bytes);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    failed = Some(format!("cannot read item {name} from {}: {e}", dir.display()));
                    break;
                }
            }
        }
        let now = std::fs::read_link(dir.join(DATA_LINK)).ok().map(|t| t.to_string_lossy().into_owned());
        if now != target {
            // Swapped while reading: what was read may mix two generations.
            last = format!("{} was swapped while its items were read", dir.join(DATA_LINK).display());
            continue;
        }
        return match failed {
            Some(e) => Err(e),
            None => Ok((target, items)),
        };
    }
    Err(last)
}

/// One read of the source: the `..data` target it went through, and item name -> bytes.
type Source = (Option<String>, BTreeMap<String, Vec<u8>>);

/// The rendered files in `dest` now (None when there is no complete set).
fn current(dest: &Path, files: &[RenderedFile]) -> Option<BTreeMap<String, Vec<u8>>> {
    let dir = dest.join(std::fs::read_link(dest.join(DATA_LINK)).ok()?);
    files.iter().map(|f| Some((f.name.clone(), std::fs::read(dir.join(&f.name)).ok()?))).collect()
}

/// Renders `files` from the items in `source` into `dest`: all or nothing, and nothing written
/// when `dest` already holds exactly these bytes.
pub fn render_dir(source: &Path, dest: &Path, files: &[RenderedFile]) -> Result<Rendered, Failure> {
    let names = needed_items(files);
    let (source_target, items) = read_items(source, &names).map_err(|message| Failure { file: None, message })?;
    let out = render_all(files, &items).map_err(|e| Failure {
        file: Some(e.file.clone()),
        message: format!("{e} (items read from {})", source.display()),
    })?;
    let before = current(dest, files);
    if before.as_ref() == Some(&out) {
        return Ok(Rendered { source_target, written: false, replaced: true });
    }
    let replaced = writer::has_data(dest);
    writer::write_set(dest, &out).map_err(|e| Failure { file: None, message: e.to_string() })?;
    Ok(Rendered { source_target, written: true, replaced })
}

pub fn run(args: RenderArgs) -> anyhow::Result<ExitCode> {
    let spec = RenderSpec::from_json(&args.spec).map_err(anyhow::Error::msg)?;
    let root = args.root.as_deref();
    let (source, dest) = (rooted(root, &spec.source_dir), rooted(root, &spec.dest_dir));
    match render_dir(&source, &dest, &spec.files) {
        Ok(r) => {
            tracing::info!(
                files = spec.files.len(),
                source = %spec.source_dir,
                dest = %spec.dest_dir,
                generation = r.source_target.as_deref().unwrap_or("-"),
                "rendered files written"
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // One line, as the init agent's: the pod does not start, and this says why.
            eprintln!("secretmode render: {}", Printable(&e.message));
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn files() -> Vec<RenderedFile> {
        vec![RenderedFile { name: "dsn".into(), source: RenderSource::Template("{{ user }}:{{ pass }}".into()) }]
    }

    #[test]
    fn reads_through_data_renders_and_writes_only_what_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let (source, dest) = (tmp.path().join("s"), tmp.path().join("d"));
        // A kubelet-style source: the visible names point into ..data; a stale file beside
        // ..data must not be read.
        std::fs::create_dir_all(source.join("..gen1")).unwrap();
        std::fs::write(source.join("..gen1/user"), "u1").unwrap();
        std::fs::write(source.join("..gen1/pass"), "p1").unwrap();
        symlink("..gen1", source.join("..data")).unwrap();
        let r = render_dir(&source, &dest, &files()).unwrap();
        assert_eq!(r, Rendered { source_target: Some("..gen1".into()), written: true, replaced: false });
        assert_eq!(std::fs::read_to_string(dest.join("dsn")).unwrap(), "u1:p1");
        let first = std::fs::read_link(dest.join(DATA_LINK)).unwrap();

        let again = render_dir(&source, &dest, &files()).unwrap();
        assert!(!again.written, "same bytes: nothing written");
        assert_eq!(std::fs::read_link(dest.join(DATA_LINK)).unwrap(), first);

        std::fs::create_dir_all(source.join("..gen2")).unwrap();
        std::fs::write(source.join("..gen2/user"), "u2").unwrap();
        std::fs::write(source.join("..gen2/pass"), "p2").unwrap();
        std::fs::remove_file(source.join("..data")).unwrap();
        symlink("..gen2", source.join("..data")).unwrap();
        let r = render_dir(&source, &dest, &files()).unwrap();
        assert!(r.written && r.replaced);
        assert_eq!(std::fs::read_to_string(dest.join("dsn")).unwrap(), "u2:p2");
    }

    #[test]
    fn a_plain_directory_works_and_a_missing_item_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (source, dest) = (tmp.path().join("s"), tmp.path().join("d"));
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("user"), "u").unwrap();
        let e = render_dir(&source, &dest, &files()).unwrap_err();
        assert_eq!(e.file.as_deref(), Some("dsn"));
        assert!(e.message.starts_with("rendered file dsn: item pass has no value"), "{e}");
        assert!(!dest.exists(), "nothing written");
        std::fs::write(source.join("pass"), "p").unwrap();
        assert_eq!(render_dir(&source, &dest, &files()).unwrap().source_target, None);
        assert_eq!(std::fs::read_to_string(dest.join("dsn")).unwrap(), "u:p");
    }
}
