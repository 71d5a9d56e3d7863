//! Paths the webhook and the agent agree on (the agent's own directories, its token file, the
//! sidecar's probe paths, the env var carrying the agent spec), and the rules for the paths a
//! pod may name: where files may be mounted, how the kubelet reads a path, and whether a
//! provider path lies under a policy prefix.

use std::borrow::Cow;

/// Environment variable carrying the JSON agent spec (`agent::spec`).
pub const SPEC_ENV: &str = "SECRETMODE_AGENT_SPEC";
/// Environment variable carrying the JSON watch spec (`agent::spec::WatchSpec`).
pub const WATCH_SPEC_ENV: &str = "SECRETMODE_WATCH_SPEC";
/// Environment variable carrying the JSON render spec (`agent::spec::RenderSpec`) of the
/// `secretmode-render` init container (`secretmode render`).
pub const RENDER_SPEC_ENV: &str = "SECRETMODE_RENDER_SPEC";

/// Where things are mounted inside the agent container, all under [`AGENT_DIR`], which no
/// `secrets/mount-path` may overlap (the agent container mounts the files directory too).
pub const AGENT_DIR: &str = "/var/run/secrets/secretmode";
pub const TOKEN_DIR: &str = "/var/run/secrets/secretmode/token";
pub const TOKEN_FILE: &str = "/var/run/secrets/secretmode/token/token";
pub const FALLBACK_DIR: &str = "/var/run/secrets/secretmode/fallback";
/// The exec wrapper's directory in every container it wraps, and the wrapper in it.
///
/// A wrapped container's command becomes
/// `[EXEC_PATH, "--env", "<STEM>,<STEM>,...", "--", <the container's own command>...]`; the
/// wrapper reads each `<STEM>_FILE` variable's file into `<STEM>` and `exec`s the rest. The
/// `secretmode-exec` init container runs `<agent.execBinary> --install EXEC_DIR`.
pub const EXEC_DIR: &str = "/var/run/secrets/secretmode/bin";
pub const EXEC_PATH: &str = "/var/run/secrets/secretmode/bin/secretmode-exec";
/// Where the watcher writes its status file (`status.json`), in its own container only.
pub const WATCH_STATUS_DIR: &str = "/var/run/secrets/secretmode/watch";

/// Probe and metrics paths the sidecar serves on its health port.
pub const STARTUP_PATH: &str = "/startup";
pub const HEALTH_PATH: &str = "/healthz";
pub const READY_PATH: &str = "/readyz";
pub const METRICS_PATH: &str = "/metrics";

/// Directories an injected mount may never be placed at or under.
const FORBIDDEN_TREES: [&str; 14] = [
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/bin",
    "/sbin",
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/boot",
    "/root",
    "/var/run/secrets/kubernetes.io",
    "/run/secrets/kubernetes.io",
];
/// Directories an injected mount may be placed under but not at (it would hide them).
const FORBIDDEN_EXACT: [&str; 9] =
    ["/var", "/run", "/var/run", "/tmp", "/home", "/opt", "/srv", "/var/lib", "/var/log"];

/// Whether `path` is an acceptable directory for the files. The error says why not.
pub fn validate_mount_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not absolute"));
    }
    if path.len() > 256 {
        return Err("mount path is longer than 256 characters".into());
    }
    if let Some(c) = path.chars().find(|c| !(c.is_ascii_alphanumeric() || "/._-".contains(*c))) {
        return Err(format!("mount path contains {c:?}"));
    }
    if path == "/" {
        return Err("\"/\" would hide the container's whole filesystem".into());
    }
    if path.ends_with('/') || path[1..].split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(format!("{path:?} is not normalised (trailing '/', '//', '.' or '..')"));
    }
    if let Some(tree) = FORBIDDEN_TREES.iter().find(|t| paths_overlap(path, t) && path.starts_with(*t)) {
        return Err(format!("{path:?} is inside the system directory {tree}"));
    }
    if FORBIDDEN_TREES.iter().any(|t| t.starts_with(path) && paths_overlap(path, t)) || FORBIDDEN_EXACT.contains(&path)
    {
        return Err(format!("{path:?} would hide a system directory"));
    }
    // The agent container mounts the files directory next to its own: the same path twice is
    // a pod the API server rejects, blaming a container the user never wrote.
    for (what, dir) in [("token", TOKEN_DIR), ("fallback", FALLBACK_DIR), ("", AGENT_DIR)] {
        if paths_overlap(path, dir) {
            return Err(match what {
                "" => format!("{path:?} is inside {dir}, which is reserved for the secretmode agent's own directories"),
                what => format!("{path:?} overlaps the secretmode agent's {what} directory {dir}"),
            });
        }
    }
    Ok(())
}

/// Whether one path is the other or one of its ancestors, by whole components, as the kubelet
/// reads them: both are cleaned first ([`clean_path`]).
pub fn paths_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (clean_path(a), clean_path(b));
    let a = a.trim_end_matches('/');
    let b = b.trim_end_matches('/');
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    long == short || short.is_empty() || long.starts_with(short) && long.as_bytes()[short.len()] == b'/'
}

/// `path` as the kubelet and container runtime resolve it, lexically (Go's `path.Clean`):
/// `//` and `.` segments dropped, `..` applied, no trailing `/`. `/a//b/./c/` is `/a/b/c`.
/// Borrowed when already clean, which every path secretmode writes is.
pub fn clean_path(path: &str) -> Cow<'_, str> {
    // Checked on bytes: every admission cleans its mount paths, and `str::split` costs more
    // than the whole check on such short strings.
    let relative = path.strip_prefix('/').unwrap_or(path).as_bytes();
    if path == "/" || !relative.is_empty() && relative.split(|&b| b == b'/').all(|s| !matches!(s, b"" | b"." | b"..")) {
        return Cow::Borrowed(path);
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    Cow::Owned(match (rooted, joined.is_empty()) {
        (true, _) => ["/", &joined].concat(),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    })
}
/// Whether `path` is `prefix` or below it, by whole segments. Both are normalised already
/// (annotation parsing rejects `..`, `//`, `%` and leading or trailing `/`).
pub fn path_within(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() || prefix == "*" {
        return true;
    }
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths() {
        for bad in [
            "/",
            "relative",
            "/proc",
            "/proc/x",
            "/etc",
            "/etc/secrets",
            "/var/run",
            "/tmp",
            "/a//b",
            "/a/../b",
            "/a/",
            "/usr/local/x",
            "/var/run/secrets/kubernetes.io/serviceaccount",
            "/var/run/secrets",
            "/a b",
            "/var/run/secrets/secretmode",
            "/var/run/secrets/secretmode/token",
            "/var/run/secrets/secretmode/fallback/x",
            "/var/run/secrets/secretmode/other",
        ] {
            assert!(validate_mount_path(bad).is_err(), "{bad} accepted");
        }
        for good in [
            "/var/run/secrets-cache",
            "/secrets",
            "/tmp/secrets",
            "/opt/app/secrets",
            "/etcetera",
            "/var/run/secrets-secretmode",
        ] {
            assert!(validate_mount_path(good).is_ok(), "{good} rejected");
        }
        let e = validate_mount_path("/var/run/secrets/secretmode/token").unwrap_err();
        assert!(e.contains("agent's token directory"), "{e}");
    }

    #[test]
    fn overlap_is_by_component() {
        assert!(paths_overlap("/a", "/a/b"));
        assert!(paths_overlap("/a/b", "/a"));
        assert!(paths_overlap("/a", "/a"));
        assert!(!paths_overlap("/a", "/ab"));
        assert!(paths_overlap("/", "/x"));
        // As the kubelet reads them.
        assert!(paths_overlap("/a//b/", "/a/b"));
        assert!(paths_overlap("/a/./b", "/a/b/c"));
        assert!(paths_overlap("/a/x/../b", "/a/b"));
        assert!(paths_overlap("/a/b/..", "/a/b"), "/a/b/.. is /a");
        assert!(!paths_overlap("/a/c/..//b2/", "/a/b"));
    }

    #[test]
    fn paths_are_cleaned_as_go_cleans_them() {
        for (raw, clean) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b"),
            ("//a//b//", "/a/b"),
            ("/a/./b/.", "/a/b"),
            ("/a/../b", "/b"),
            ("/../a", "/a"),
            ("/a/b/../..", "/"),
            ("a/../..", ".."),
            ("./a", "a"),
            ("", "."),
            ("/.", "/"),
        ] {
            assert_eq!(clean_path(raw), clean, "{raw:?}");
        }
        // Already clean: borrowed, as is (dots inside a name are not `.` or `..` segments).
        for clean in ["/", "a", "a/b", "/var/run/secrets-cache", "/a/..b/.c/d.."] {
            assert!(matches!(clean_path(clean), Cow::Borrowed(p) if p == clean), "{clean:?}");
        }
    }
    #[test]
    fn path_boundary_is_by_segment() {
        assert!(path_within("prod/payments/db", "prod/payments"));
        assert!(path_within("prod/payments/db", "prod/payments/"));
        assert!(path_within("prod/payments", "prod/payments"));
        assert!(!path_within("prod/payments-evil/db", "prod/payments"));
        assert!(!path_within("prod/paymentsdb", "prod/payments"));
        assert!(!path_within("prod", "prod/payments"));
    }
}
