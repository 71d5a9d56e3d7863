//! Names secretmode writes into a pod or reads from one: the reserved `secretmode-` objects,
//! the Secrets Store CSI driver, the annotation keys, and the Kubernetes rules for names.

/// Every container and volume secretmode injects starts with this; a pod may not use it for
/// objects of its own.
pub const RESERVED_PREFIX: &str = "secretmode-";
pub const SECRETS_VOLUME: &str = "secretmode-secrets";
pub const TOKEN_VOLUME: &str = "secretmode-token";
pub const FALLBACK_VOLUME: &str = "secretmode-fallback";
pub const INIT_CONTAINER: &str = "secretmode-init";
pub const SIDECAR_CONTAINER: &str = "secretmode-sidecar";
/// The init container that copies the exec wrapper (`env-values` outside `eso`) into
/// [`EXEC_VOLUME`], a small disk-backed emptyDir the app containers mount read-only.
pub const EXEC_CONTAINER: &str = "secretmode-exec";
pub const EXEC_VOLUME: &str = "secretmode-bin";
/// The watcher that fires `on-change` in `eso` and `csi` (`secretmode watch`).
pub const WATCHER_CONTAINER: &str = "secretmode-watcher";
/// The watcher's own status directory (an in-memory emptyDir, mounted in the watcher only).
pub const WATCH_STATUS_VOLUME: &str = "secretmode-watch-status";
/// The init container that renders `eso`/`csi` pods' rendered files once before the app
/// starts (`secretmode render`), into [`RENDERED_VOLUME`], an in-memory emptyDir the app
/// containers mount read-only at `<mount-path>-rendered`.
pub const RENDER_CONTAINER: &str = "secretmode-render";
pub const RENDERED_VOLUME: &str = "secretmode-rendered";
/// Name of the sidecar's declared port (at most 15 characters).
pub const PORT_NAME: &str = "secretmode";

/// Whether `name` (of a container or volume) is reserved for what secretmode injects.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// The pod spec lists whose entries secretmode names, and so checks for a reserved name.
pub const NAMED_SPEC_LISTS: [&str; 3] = ["volumes", "containers", "initContainers"];

/// The Secrets Store CSI driver; a volume of this driver fetches from the provider at mount
/// time, which is mode `csi` whether or not the webhook wrote it.
pub const CSI_DRIVER: &str = "secrets-store.csi.k8s.io";
/// The one volume attribute the webhook writes; every other key overrides the
/// SecretProviderClass's parameters (objects, role, vault address) from the pod.
pub const CSI_CLASS_ATTRIBUTE: &str = "secretProviderClass";

/// The annotation keys secretmode reads, without the prefix.
pub mod keys {
    pub const MODE: &str = "mode";
    pub const ITEM: &str = "item.";
    pub const PROVIDER: &str = "provider";
    pub const ESO_SECRET: &str = "eso-secret";
    pub const CSI_CLASS: &str = "csi-class";
    pub const CONTAINERS: &str = "containers";
    pub const MOUNT_PATH: &str = "mount-path";
    pub const REFRESH_INTERVAL: &str = "refresh-interval";
    pub const MAX_STALENESS: &str = "max-staleness";
    pub const ENV_VALUES: &str = "env-values";
    pub const FALLBACK_SECRET: &str = "fallback-secret";
    pub const ON_CHANGE: &str = "on-change";
    /// `template.<file>`: a rendered file from a template over the pod's items.
    pub const TEMPLATE: &str = "template.";
    /// `bundle.<file>`: a rendered file holding items in a fixed format.
    pub const BUNDLE: &str = "bundle.";
    /// Written by the webhook, never read to decide anything.
    pub const INJECTED: &str = "injected";

    pub const ALL: [&str; 14] = [
        MODE,
        "item.<name>",
        "template.<file>",
        "bundle.<file>",
        PROVIDER,
        ESO_SECRET,
        CSI_CLASS,
        CONTAINERS,
        MOUNT_PATH,
        REFRESH_INTERVAL,
        MAX_STALENESS,
        ENV_VALUES,
        FALLBACK_SECRET,
        ON_CHANGE,
    ];
}

/// RFC 1123 label: what Kubernetes requires of container and volume names.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: what Kubernetes requires of Secret and SecretProviderClass names.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// `*` matches any run of characters, `?` exactly one (namespace patterns in policy rules).
/// Runs on every admission (`PolicyConfig::rule_for`): ASCII input (every namespace and
/// every valid pattern) is matched byte by byte without allocating.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        return glob(pattern.as_bytes(), text.as_bytes(), b'*', b'?');
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    glob(&p, &t, '*', '?')
}

fn glob<T: PartialEq + Copy>(p: &[T], t: &[T], any_run: T, any_one: T) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == any_one || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == any_run {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == any_run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns_label("secretmode-init"));
        assert!(!is_dns_label("Secret"));
        assert!(!is_dns_label("-a"));
        assert!(is_dns_subdomain("my.secret-store"));
        assert!(!is_dns_subdomain("a..b"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("team-*", "team-a"));
        assert!(!glob_match("team-*", "teams"));
        assert!(glob_match("pay?", "pay1"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("payments", "payments-evil"));
        // Outside ASCII, `?` is one character, not one byte.
        assert!(glob_match("caf?", "café") && !glob_match("caf??", "café"));
    }

    #[test]
    fn reserved_names() {
        for name in [SECRETS_VOLUME, TOKEN_VOLUME, FALLBACK_VOLUME, INIT_CONTAINER, SIDECAR_CONTAINER] {
            assert!(is_reserved(name) && is_dns_label(name), "{name}");
        }
        assert!(!is_reserved("secretmode") && !is_reserved("app"));
        assert!(PORT_NAME.len() <= 15);
    }
}
