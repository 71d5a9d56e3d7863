//! `<prefix>/on-change`: what to do after the files change, parsed once and carried to the
//! agent or watcher that does it.
//!
//! Two actions, both confined to the pod:
//! - `[METHOD ]http://127.0.0.1:<port>[/<path>]` (or `localhost`, `[::1]`): a request to the
//!   app on the pod's loopback, as Prometheus' config reloader sends one. Never another host:
//!   the annotation is written by whoever writes the pod, and must not turn the agent into a
//!   proxy. `METHOD` is `POST` (the default), `PUT` or `GET`.
//! - `signal:<NAME>` (`signal:HUP` or `signal:SIGHUP`): a signal to the main process of each
//!   target container, which needs the pod's process namespace shared.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The action, as the webhook writes it into the agent's or watcher's spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum OnChange {
    Http(HttpAction),
    Signal(Signal),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpAction {
    pub method: Method,
    /// Written `127.0.0.1`, `localhost` or `::1`; the request always goes to loopback.
    pub host: LoopbackHost,
    pub port: u16,
    /// Starts with `/`; may carry a query.
    pub path: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LoopbackHost {
    /// `127.0.0.1` (also written `localhost`).
    V4,
    /// `[::1]`.
    V6,
}

impl LoopbackHost {
    /// The host as it goes into a URL.
    pub fn as_url_host(self) -> &'static str {
        match self {
            LoopbackHost::V4 => "127.0.0.1",
            LoopbackHost::V6 => "[::1]",
        }
    }
    pub fn ip(self) -> std::net::IpAddr {
        match self {
            LoopbackHost::V4 => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            LoopbackHost::V6 => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        }
    }
}

/// The signals an app conventionally reloads or rotates on, and the polite stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    #[serde(rename = "HUP")]
    Hup,
    #[serde(rename = "USR1")]
    Usr1,
    #[serde(rename = "USR2")]
    Usr2,
    #[serde(rename = "INT")]
    Int,
    #[serde(rename = "TERM")]
    Term,
    #[serde(rename = "QUIT")]
    Quit,
    #[serde(rename = "WINCH")]
    Winch,
}

impl Signal {
    pub const ALL: [Signal; 7] =
        [Signal::Hup, Signal::Usr1, Signal::Usr2, Signal::Int, Signal::Term, Signal::Quit, Signal::Winch];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Hup => "HUP",
            Signal::Usr1 => "USR1",
            Signal::Usr2 => "USR2",
            Signal::Int => "INT",
            Signal::Term => "TERM",
            Signal::Quit => "QUIT",
            Signal::Winch => "WINCH",
        }
    }

    /// The Linux signal number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Hup => 1,
            Signal::Int => 2,
            Signal::Quit => 3,
            Signal::Usr1 => 10,
            Signal::Usr2 => 12,
            Signal::Term => 15,
            Signal::Winch => 28,
        }
    }
}

/// Env var the webhook sets (to the container's name) in each container whose main process a
/// `signal:` action targets; the signalling side finds that process by it in `/proc`.
pub const SIGNAL_TARGET_ENV: &str = "SECRETMODE_SIGNAL_TARGET";

const SYNTAX: &str =
    "write \"http://127.0.0.1:<port>/<path>\" (optionally preceded by GET, POST or PUT) or \"signal:HUP\"";

impl FromStr for OnChange {
    type Err = (String, String);

    /// The error is `(problem, fix)`.
    fn from_str(value: &str) -> Result<OnChange, (String, String)> {
        let fail = |problem: String| Err((problem, SYNTAX.to_string()));
        let not_loopback = |host: &str| {
            Err((
                format!("{host:?} is not the pod's loopback; on-change requests never leave the pod"),
                "send it to http://127.0.0.1:<port>/<path>, where the app listens inside the pod".to_string(),
            ))
        };
        if let Some(name) = value.strip_prefix("signal:") {
            let bare = name.strip_prefix("SIG").unwrap_or(name);
            return match Signal::ALL.into_iter().find(|s| s.as_str() == bare) {
                Some(s) => Ok(OnChange::Signal(s)),
                None => Err((
                    format!("{name:?} is not a signal secretmode sends"),
                    format!("use one of {}", Signal::ALL.map(|s| ["signal:", s.as_str()].concat()).join(", ")),
                )),
            };
        }
        let (method, url) = match value.split_once(' ') {
            Some((m, url)) => {
                let method = match m {
                    "GET" => Method::Get,
                    "POST" => Method::Post,
                    "PUT" => Method::Put,
                    _ => return fail(format!("{m:?} is not an HTTP method secretmode sends (GET, POST or PUT)")),
                };
                (method, url)
            }
            None => (Method::Post, value),
        };
        let Some(rest) = url.strip_prefix("http://") else {
            return fail(format!("{url:?} is neither an http:// URL nor a signal: action"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix("[::1]") {
            (LoopbackHost::V6, v6.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some(("127.0.0.1" | "localhost", port)) => (LoopbackHost::V4, Some(port)),
                _ if authority.is_empty() => return fail("the URL has no host".to_string()),
                Some((host, _)) if !matches!(host, "127.0.0.1" | "localhost") => return not_loopback(host),
                None if !matches!(authority, "127.0.0.1" | "localhost") => return not_loopback(authority),
                _ => (LoopbackHost::V4, None),
            }
        };
        let Some(port) = port else {
            return fail("the URL names no port (the app's port is never guessed)".to_string());
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return fail(format!("{port:?} is not a port number (1-65535)")),
        };
        if let Some(c) = path.chars().find(|c| c.is_ascii_whitespace() || *c == '#') {
            return fail(format!("the path contains {c:?}"));
        }
        Ok(OnChange::Http(HttpAction { method, host, port, path: path.to_string() }))
    }
}

impl fmt::Display for OnChange {
    /// The annotation form, normalised (`signal:HUP`, `POST http://127.0.0.1:8080/-/reload`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnChange::Signal(s) => write!(f, "signal:{}", s.as_str()),
            OnChange::Http(h) => {
                write!(f, "{} http://{}:{}{}", h.method.as_str(), h.host.as_url_host(), h.port, h.path)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(method: Method, host: LoopbackHost, port: u16, path: &str) -> OnChange {
        OnChange::Http(HttpAction { method, host, port, path: path.into() })
    }

    #[test]
    fn accepts_loopback_requests_and_signals() {
        let cases = [
            ("http://127.0.0.1:9090/-/reload", http(Method::Post, LoopbackHost::V4, 9090, "/-/reload")),
            ("GET http://localhost:8080/reload?x=1", http(Method::Get, LoopbackHost::V4, 8080, "/reload?x=1")),
            ("PUT http://[::1]:80", http(Method::Put, LoopbackHost::V6, 80, "/")),
            ("signal:HUP", OnChange::Signal(Signal::Hup)),
            ("signal:SIGUSR1", OnChange::Signal(Signal::Usr1)),
        ];
        for (text, want) in cases {
            let got: OnChange = text.parse().unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(got, want, "{text}");
            // Display is the normalised form and parses back to the same action.
            assert_eq!(got.to_string().parse::<OnChange>(), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_other_hosts_and_bad_syntax_naming_the_problem() {
        let cases = [
            ("http://10.0.0.1:80/reload", "loopback"),
            ("http://example.com:80/", "loopback"),
            ("http://127.0.0.2:80/", "loopback"),
            ("https://127.0.0.1:80/", "neither"),
            ("http://127.0.0.1/reload", "no port"),
            ("http://127.0.0.1:0/", "port number"),
            ("http://127.0.0.1:99999/", "port number"),
            ("DELETE http://127.0.0.1:80/", "method"),
            ("http://127.0.0.1:80/a#b", "contains"),
            ("signal:KILL", "not a signal"),
            ("signal:", "not a signal"),
            ("reload", "neither"),
            ("http://", "no host"),
        ];
        for (text, needle) in cases {
            let (problem, fix) = text.parse::<OnChange>().expect_err(text);
            assert!(problem.contains(needle), "{text}: {problem}");
            assert!(!fix.is_empty());
        }
    }

    #[test]
    fn the_spec_form_is_stable() {
        let a = http(Method::Post, LoopbackHost::V4, 9090, "/-/reload");
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"http":{"method":"POST","host":"v4","port":9090,"path":"/-/reload"}}"#
        );
        assert_eq!(serde_json::to_string(&OnChange::Signal(Signal::Hup)).unwrap(), r#"{"signal":"HUP"}"#);
    }
}
