//! `secretmode-exec`: the exec wrapper that gives an app its secret values as environment
//! variables in modes `csi`, `init` and `sidecar` (`secrets/env-values: "true"`).
//!
//! ```text
//! secretmode-exec --install <dir>
//! secretmode-exec --env <STEM>[,<STEM>...] -- <command> [args...]
//! ```
//!
//! `--install` copies this executable (`/proc/self/exe`) to `<dir>/secretmode-exec`, mode 0555,
//! through a temporary file and a rename (the `secretmode-exec` init container runs it into the
//! `secretmode-bin` emptyDir). `--env` reads, for each stem, the file named by the variable
//! `<STEM>_FILE`, sets `<STEM>` to its bytes as they are (a trailing newline is kept), and
//! `exec`s the command, looked up in `PATH` as a container runtime does: the process *becomes*
//! the command, so signals and the exit status are the command's own.
//!
//! Std only, and no use of the `secretmode` library: the binary stays small (it is copied into
//! every wrapped pod) and starts in about a millisecond. Every failure is one stderr line
//! `secretmode-exec: ...` naming the item (stem), the path and why; never a value.
//!
//! Exit codes, as GNU `env` and `timeout` use them: 125 the wrapper failed (usage, install, an
//! item), 126 the command was found but could not be run, 127 the command was not found.
//! Otherwise the status is the command's. See docs/AGENT.md, "Exec wrapper".

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The wrapper failed: usage, install, or an item.
const EXIT_FAILED: u8 = 125;
/// The command exists but could not be run (not executable, bad format, too large an env).
const EXIT_CANNOT_RUN: u8 = 126;
/// The command was not found.
const EXIT_NOT_FOUND: u8 = 127;

/// The file name `--install` writes in its directory.
const INSTALLED_NAME: &str = "secretmode-exec";

/// Linux refuses (E2BIG) an environment string `NAME=value` longer than this, NUL included
/// (`MAX_ARG_STRLEN`, 32 pages): a larger value could never reach the command.
const MAX_ENV_STRING: usize = 32 * 4096;

const USAGE: &str = "usage: secretmode-exec --env <STEM>[,<STEM>...] -- <command> [args...]\n       \
secretmode-exec --install <dir>\n\n\
--env: for each STEM, reads the file named by $<STEM>_FILE into $<STEM> (bytes as they are),\n\
then execs the command (looked up in PATH). Exit codes: 125 the wrapper failed, 126 the\n\
command cannot run, 127 the command was not found; otherwise the command's own.\n\
--install: copies this executable to <dir>/secretmode-exec (mode 0555, atomically).\n";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Invocation {
    Help,
    Install(PathBuf),
    Exec { stems: Vec<String>, command: Vec<OsString> },
}

/// A wrong command line: the message names what is wrong.
#[derive(Debug, PartialEq, Eq)]
struct UsageError(String);

fn parse(args: &[OsString]) -> Result<Invocation, UsageError> {
    let usage = |m: &str| Err(UsageError(m.to_string()));
    match args.first().map(|a| a.as_bytes()) {
        None => usage("no arguments: give --env <STEMS> -- <command>, or --install <dir>"),
        Some(b"--help" | b"-h") if args.len() == 1 => Ok(Invocation::Help),
        Some(b"--install") => match args {
            [_, dir] if !dir.is_empty() => Ok(Invocation::Install(PathBuf::from(dir))),
            [_, _] => usage("--install: the directory is empty"),
            [_] => usage("--install needs a directory"),
            _ => usage("--install takes one directory and nothing else"),
        },
        Some(b"--env") => {
            let Some(list) = args.get(1) else {
                return usage("--env needs a list of stems, e.g. --env DB_PASSWORD,API_KEY");
            };
            let Some(list) = list.to_str() else { return usage("--env: the list of stems is not UTF-8") };
            let stems = parse_stems(list)?;
            match args.get(2).map(|a| a.as_bytes()) {
                Some(b"--") => {}
                Some(_) => return usage("--env <STEMS> must be followed by -- and the command"),
                None => return usage("no command: give -- <command> [args...] after --env <STEMS>"),
            }
            let command = args[3..].to_vec();
            match command.first() {
                None => usage("no command after --"),
                Some(c) if c.is_empty() => usage("the command after -- is empty"),
                Some(_) => Ok(Invocation::Exec { stems, command }),
            }
        }
        Some(_) => usage(&format!("unknown argument {:?}: give --env or --install", args[0])),
    }
}

/// `A,B,C` → the stems. Each is a variable name the wrapper can set (no `=`, no NUL, no
/// space), listed once.
fn parse_stems(list: &str) -> Result<Vec<String>, UsageError> {
    let mut stems: Vec<String> = Vec::new();
    for stem in list.split(',') {
        if stem.is_empty() {
            return Err(UsageError(format!("--env {list:?}: an empty stem (stems are separated by single commas)")));
        }
        if let Some(c) = stem.chars().find(|c| !(c.is_ascii_graphic() && *c != '=')) {
            return Err(UsageError(format!("--env: stem {stem:?} contains {c:?}, which a variable name cannot hold")));
        }
        if stems.iter().any(|s| s == stem) {
            return Err(UsageError(format!("--env: stem {stem} is listed twice")));
        }
        stems.push(stem.to_string());
    }
    Ok(stems)
}

/// Why one item's value could not be read. Display: `item <STEM>: ...`, never the value.
#[derive(Debug)]
enum ItemError {
    NoVariable { stem: String, var: String },
    EmptyVariable { stem: String, var: String },
    Open { stem: String, path: PathBuf, error: io::Error },
    Read { stem: String, path: PathBuf, error: io::Error },
    TooLarge { stem: String, path: PathBuf, limit: usize },
    Nul { stem: String, path: PathBuf, offset: usize },
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemError::NoVariable { stem, var } => {
                write!(f, "item {stem}: the variable {var} is not set (it names the item's file)")
            }
            ItemError::EmptyVariable { stem, var } => write!(f, "item {stem}: the variable {var} is empty"),
            ItemError::Open { stem, path, error } => {
                write!(f, "item {stem}: cannot open {}: {}", path.display(), describe(error))
            }
            ItemError::Read { stem, path, error } => {
                write!(f, "item {stem}: cannot read {}: {}", path.display(), describe(error))
            }
            ItemError::TooLarge { stem, path, limit } => write!(
                f,
                "item {stem}: {} is larger than {limit} bytes, the most one environment variable \
                 {stem}=... can hold on Linux; read the file instead",
                path.display()
            ),
            ItemError::Nul { stem, path, offset } => write!(
                f,
                "item {stem}: {} holds a NUL byte at offset {offset}, which an environment \
                 variable cannot carry; read the file instead",
                path.display()
            ),
        }
    }
}

/// An OS error in a few plain words (the kind, not Rust's "(os error 2)" suffix alone).
fn describe(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::IsADirectory => "it is a directory".into(),
        _ => error.to_string(),
    }
}

/// Reads `<stem>_FILE`'s file for each stem, as given by `var` (the environment, in `main`).
fn read_items(stems: &[String], var: impl Fn(&str) -> Option<OsString>) -> Result<Vec<(String, OsString)>, ItemError> {
    let mut out = Vec::with_capacity(stems.len());
    for stem in stems {
        let var_name = format!("{stem}_FILE");
        let path = match var(&var_name) {
            None => return Err(ItemError::NoVariable { stem: stem.clone(), var: var_name }),
            Some(p) if p.is_empty() => return Err(ItemError::EmptyVariable { stem: stem.clone(), var: var_name }),
            Some(p) => PathBuf::from(p),
        };
        let value = read_value(stem, &path)?;
        out.push((stem.clone(), value));
    }
    Ok(out)
}

/// One file's bytes, refused when `STEM=value` could not pass `execve` (too long, or a NUL).
fn read_value(stem: &str, path: &Path) -> Result<OsString, ItemError> {
    // `NAME=value\0` must fit in MAX_ENV_STRING.
    let limit = MAX_ENV_STRING - stem.len() - 2;
    let file = File::open(path).map_err(|error| ItemError::Open { stem: stem.into(), path: path.into(), error })?;
    let mut bytes = Vec::new();
    // One byte over the limit is enough to know; a FIFO or /dev/zero cannot make this grow.
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(|error| ItemError::Read {
        stem: stem.into(),
        path: path.into(),
        error,
    })?;
    if bytes.len() > limit {
        return Err(ItemError::TooLarge { stem: stem.into(), path: path.into(), limit });
    }
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Err(ItemError::Nul { stem: stem.into(), path: path.into(), offset });
    }
    Ok(OsString::from_vec(bytes))
}

/// Why the command could not be exec'd, and the matching exit code.
fn exec_failure(program: &OsStr, error: &io::Error) -> (u8, String) {
    let name = Path::new(program).display();
    let searched = if program.as_bytes().contains(&b'/') { "" } else { " in PATH" };
    match error.raw_os_error() {
        // execve says ENOENT too when the file is there but its #! interpreter or its dynamic
        // loader is not.
        Some(ENOENT) if Path::new(program).is_file() => (
            EXIT_NOT_FOUND,
            format!("command {name}: its interpreter (#! line) or dynamic loader was not found"),
        ),
        Some(ENOENT) => (EXIT_NOT_FOUND, format!("command {name}: not found{searched}")),
        Some(EACCES) => (
            EXIT_CANNOT_RUN,
            format!("command {name}: permission denied (not executable, or a directory on the way is not searchable)"),
        ),
        Some(ENOEXEC) => (
            EXIT_CANNOT_RUN,
            format!("command {name}: not an executable format (a script needs a #! line)"),
        ),
        Some(E2BIG) => (
            EXIT_CANNOT_RUN,
            format!("command {name}: the environment and arguments are too large for exec (E2BIG); read the larger items from their files"),
        ),
        _ => (EXIT_CANNOT_RUN, format!("command {name}: cannot run: {error}")),
    }
}

// errno values on Linux (every architecture Kubernetes runs containers on); no libc crate.
const ENOENT: i32 = 2;
const E2BIG: i32 = 7;
const ENOEXEC: i32 = 8;
const EACCES: i32 = 13;

/// Replaces this process with the command, its items set. Returns only on failure.
fn exec(items: Vec<(String, OsString)>, command: &[OsString]) -> (u8, String) {
    let (program, args) = match command.split_first() {
        Some(split) => split,
        None => return (EXIT_FAILED, "no command".into()),
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (stem, value) in items {
        cmd.env(stem, value);
    }
    // std resets SIGPIPE and the signal mask before execvp: the command starts as the
    // runtime would start it.
    let error = cmd.exec();
    exec_failure(program, &error)
}

/// Copies this executable to `<dir>/secretmode-exec`: a temporary file in `dir`, 0555,
/// flushed to disk, then renamed over the name (readers see the old file or the whole new one).
fn install(dir: &Path) -> Result<PathBuf, String> {
    let target = dir.join(INSTALLED_NAME);
    let temp = dir.join(format!(".{INSTALLED_NAME}.{}.tmp", std::process::id()));
    // A restarted init container is PID 1 again: a temporary file its crashed predecessor left
    // under the same name (perhaps already 0555) goes first.
    let _ = std::fs::remove_file(&temp);
    let copy = || -> Result<(), String> {
        let mut source =
            File::open("/proc/self/exe").map_err(|e| format!("cannot open /proc/self/exe (this executable): {e}"))?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| format!("cannot create {}: {}", temp.display(), describe(&e)))?;
        io::copy(&mut source, &mut out).map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
        out.set_permissions(std::fs::Permissions::from_mode(0o555))
            .map_err(|e| format!("cannot set mode 0555 on {}: {e}", temp.display()))?;
        out.sync_all().map_err(|e| format!("cannot flush {}: {e}", temp.display()))?;
        std::fs::rename(&temp, &target)
            .map_err(|e| format!("cannot rename {} to {}: {e}", temp.display(), target.display()))
    };
    if let Err(e) = copy() {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    // The rename is durable once the directory is flushed; an emptyDir outlives the container.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(target)
}

fn fail(code: u8, message: impl fmt::Display) -> ExitCode {
    // One line: a message never spans lines (paths are printed with `display`, and a newline
    // in one is escaped).
    let line = message.to_string().replace('\n', "\\n");
    let _ = writeln!(io::stderr(), "secretmode-exec: {line}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match parse(&args) {
        Err(UsageError(m)) => fail(EXIT_FAILED, format_args!("{m} (--help for usage)")),
        Ok(Invocation::Help) => {
            let _ = io::stdout().write_all(USAGE.as_bytes());
            ExitCode::SUCCESS
        }
        Ok(Invocation::Install(dir)) => match install(&dir) {
            Ok(target) => {
                let _ = writeln!(io::stdout(), "secretmode-exec: installed {}", target.display());
                ExitCode::SUCCESS
            }
            Err(m) => fail(EXIT_FAILED, format_args!("--install {}: {m}", dir.display())),
        },
        Ok(Invocation::Exec { stems, command }) => match read_items(&stems, |name| std::env::var_os(name)) {
            Err(e) => fail(EXIT_FAILED, e),
            Ok(items) => {
                let (code, message) = exec(items, &command);
                fail(code, message)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    fn usage_error(a: &[&str]) -> String {
        match parse(&args(a)) {
            Err(UsageError(m)) => m,
            other => panic!("{a:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn the_two_forms_parse() {
        assert_eq!(parse(&args(&["--install", "/x/bin"])), Ok(Invocation::Install("/x/bin".into())));
        assert_eq!(
            parse(&args(&["--env", "DB_PASSWORD,API_KEY", "--", "/app", "--flag", "--", "-x"])),
            Ok(Invocation::Exec {
                stems: vec!["DB_PASSWORD".into(), "API_KEY".into()],
                command: args(&["/app", "--flag", "--", "-x"]),
            })
        );
        assert_eq!(parse(&args(&["--help"])), Ok(Invocation::Help));
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        assert!(usage_error(&[]).contains("no arguments"));
        assert!(usage_error(&["--install"]).contains("needs a directory"));
        assert!(usage_error(&["--install", ""]).contains("empty"));
        assert!(usage_error(&["--install", "/a", "/b"]).contains("one directory"));
        assert!(usage_error(&["--env"]).contains("list of stems"));
        assert!(usage_error(&["--env", "A"]).contains("no command"));
        assert!(usage_error(&["--env", "A", "/app"]).contains("followed by --"));
        assert!(usage_error(&["--env", "A", "--"]).contains("no command after --"));
        assert!(usage_error(&["--env", "A", "--", ""]).contains("empty"));
        assert!(usage_error(&["--env", "", "--", "/app"]).contains("empty stem"));
        assert!(usage_error(&["--env", "A,,B", "--", "/app"]).contains("empty stem"));
        assert!(usage_error(&["--env", "A,", "--", "/app"]).contains("empty stem"));
        assert!(usage_error(&["--env", "A=B", "--", "/app"]).contains("'='"));
        assert!(usage_error(&["--env", "A B", "--", "/app"]).contains("' '"));
        assert!(usage_error(&["--env", "A,A", "--", "/app"]).contains("listed twice"));
        assert!(usage_error(&["--run", "x"]).contains("unknown argument \"--run\""));
        assert!(usage_error(&["--help", "x"]).contains("unknown argument"));
    }

    /// Reads `stems` with `vars` as the environment.
    fn read(stems: &[&str], vars: &BTreeMap<String, OsString>) -> Result<Vec<(String, OsString)>, ItemError> {
        let stems: Vec<String> = stems.iter().map(|s| s.to_string()).collect();
        read_items(&stems, |name| vars.get(name).cloned())
    }

    #[test]
    fn values_are_read_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut vars = BTreeMap::new();
        let values: [(&str, &[u8]); 3] =
            [("A", b"line one\nline two\n"), ("B", b""), ("C", b"\xff\xfe not utf-8 = fine \t")];
        for (stem, value) in values {
            let path = dir.path().join(stem);
            std::fs::write(&path, value).unwrap();
            vars.insert(format!("{stem}_FILE"), path.into_os_string());
        }
        let read = read(&["A", "B", "C"], &vars).unwrap();
        let got: Vec<(&str, &[u8])> = read.iter().map(|(s, v)| (s.as_str(), v.as_bytes())).collect();
        assert_eq!(got, values);
    }

    #[test]
    fn each_failure_names_the_item_and_the_path_and_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "s3cr3t-value";
        let good = dir.path().join("good");
        std::fs::write(&good, secret).unwrap();
        let nul = dir.path().join("nul");
        std::fs::write(&nul, format!("{secret}\0tail")).unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, secret.repeat(MAX_ENV_STRING / secret.len() + 1)).unwrap();
        let missing = dir.path().join("missing");
        let cases: [(&str, Option<&Path>, &str); 6] = [
            ("NOVAR", None, "the variable NOVAR_FILE is not set"),
            ("EMPTY", Some(Path::new("")), "the variable EMPTY_FILE is empty"),
            ("GONE", Some(&missing), "no such file"),
            ("DIR", Some(dir.path()), "it is a directory"),
            ("NUL", Some(&nul), "NUL byte at offset 12"),
            ("BIG", Some(&big), "larger than 131067 bytes"),
        ];
        for (stem, path, why) in cases {
            let mut vars = BTreeMap::new();
            vars.insert("OK_FILE".to_string(), good.clone().into_os_string());
            if let Some(p) = path {
                vars.insert(format!("{stem}_FILE"), p.as_os_str().to_owned());
            }
            let message = read(&["OK", stem], &vars).unwrap_err().to_string();
            assert!(message.starts_with(&format!("item {stem}: ")), "{message}");
            assert!(message.contains(why), "{stem}: {message}");
            if let Some(p) = path.filter(|p| !p.as_os_str().is_empty()) {
                assert!(message.contains(&p.display().to_string()), "{message}");
            }
            assert!(!message.contains(secret) && !message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn the_size_limit_is_exactly_what_exec_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        // "AB=" + value + NUL == MAX_ENV_STRING is the largest string execve takes.
        std::fs::write(&path, vec![b'x'; MAX_ENV_STRING - 4]).unwrap();
        assert_eq!(read_value("AB", &path).unwrap().len(), MAX_ENV_STRING - 4);
        std::fs::write(&path, vec![b'x'; MAX_ENV_STRING - 3]).unwrap();
        assert!(matches!(read_value("AB", &path), Err(ItemError::TooLarge { .. })));
    }

    #[test]
    fn exec_failures_map_to_the_shells_exit_codes() {
        let code = |errno: i32, program: &str| exec_failure(OsStr::new(program), &io::Error::from_raw_os_error(errno));
        let (c, m) = code(ENOENT, "app");
        assert_eq!((c, m.as_str()), (127, "command app: not found in PATH"));
        let (c, m) = code(ENOENT, "/bin/app");
        assert_eq!((c, m.as_str()), (127, "command /bin/app: not found"));
        let (c, m) = code(ENOENT, "/proc/self/exe");
        assert_eq!(
            (c, m.as_str()),
            (127, "command /proc/self/exe: its interpreter (#! line) or dynamic loader was not found")
        );
        assert_eq!(code(EACCES, "/app").0, 126);
        assert_eq!(code(ENOEXEC, "/app").0, 126);
        assert!(code(E2BIG, "/app").1.contains("too large"));
        assert_eq!(code(5, "/app").0, 126);
    }

    #[test]
    fn install_replaces_an_existing_copy_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(INSTALLED_NAME), b"old").unwrap();
        std::fs::set_permissions(dir.path().join(INSTALLED_NAME), std::fs::Permissions::from_mode(0o555)).unwrap();
        let target = install(dir.path()).unwrap();
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o555);
        assert_eq!(meta.len(), std::fs::metadata("/proc/self/exe").unwrap().len());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [OsString::from(INSTALLED_NAME)]);

        // A predecessor with the same pid (PID 1 in a container) left its temporary file.
        let stale = dir.path().join(format!(".{INSTALLED_NAME}.{}.tmp", std::process::id()));
        std::fs::write(&stale, b"partial").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o555)).unwrap();
        install(dir.path()).unwrap();
        assert!(!stale.exists());

        let message = install(&dir.path().join("no-such-dir")).unwrap_err();
        assert!(message.contains("no-such-dir") && message.contains("no such file"), "{message}");
    }
}
