//! The four delivery modes and the failure behaviour each one buys.
//!
//! The modes are one list (`modes!` below): the enum, [`Mode::ALL`], [`Mode::as_str`], the serde
//! names and [`VALID_MODES`] are all made from it, so a mode added there is named everywhere,
//! and every `match` over modes (there is no `_ =>` arm over them anywhere) fails to compile
//! until it handles the new one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Defines [`Mode`] from `Variant = "name"` pairs, in the order messages list them.
macro_rules! modes {
    ($first:ident = $first_name:literal $(, $variant:ident = $name:literal)* $(,)?) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Mode {
            #[serde(rename = $first_name)]
            $first,
            $(
                #[serde(rename = $name)]
                $variant,
            )*
        }

        /// The modes as messages list them: `eso, csi, init, sidecar`.
        pub const VALID_MODES: &str = concat!($first_name $(, ", ", $name)*);

        impl Mode {
            pub const ALL: [Mode; [$first_name $(, $name)*].len()] = [Mode::$first $(, Mode::$variant)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    Mode::$first => $first_name,
                    $(Mode::$variant => $name,)*
                }
            }
        }
    };
}

modes! {
    Eso = "eso",
    Csi = "csi",
    Init = "init",
    Sidecar = "sidecar",
}

impl Mode {
    /// Modes whose files are written by the injected agent.
    pub fn uses_agent(self) -> bool {
        match self {
            Mode::Eso | Mode::Csi => false,
            Mode::Init | Mode::Sidecar => true,
        }
    }

    /// Modes whose agent keeps the files fresh: a refresh interval and a freshness budget
    /// (`max-staleness`) apply to them.
    pub fn refreshes(self) -> bool {
        match self {
            Mode::Eso | Mode::Csi | Mode::Init => false,
            Mode::Sidecar => true,
        }
    }

    /// What this mode does when the provider is down, in the words of DESIGN.md's table.
    pub fn outage(self, with_fallback: bool) -> Outage {
        match (self, with_fallback) {
            (Mode::Eso, _) => Outage {
                running_pods: "keep running",
                new_pods: "start (the Secret is the cache)",
                rotation: "on ESO refresh; silent staleness risk",
                recovery: "ESO resyncs on its next refresh",
            },
            (Mode::Csi, _) => Outage {
                running_pods: "keep running",
                new_pods: "blocked in ContainerCreating",
                rotation: "driver rotation, if enabled",
                recovery: "pending pods mount once the provider answers",
            },
            (Mode::Init, false) => Outage {
                running_pods: "keep running",
                new_pods: "blocked (init container fails loudly)",
                rotation: "only on pod restart",
                recovery: "init container retries on restart",
            },
            (Mode::Sidecar, false) => Outage {
                running_pods: "keep running, last-known-good",
                new_pods: "blocked until first fetch",
                rotation: "every refresh interval, no restart",
                recovery: "next refresh after the provider is back",
            },
            (Mode::Init, true) => Outage {
                running_pods: "keep running",
                new_pods: "start from the fallback Secret, flagged",
                rotation: "only on pod restart",
                recovery: "next restart reads the provider again",
            },
            (Mode::Sidecar, true) => Outage {
                running_pods: "keep running, last-known-good",
                new_pods: "start from the fallback Secret, flagged",
                rotation: "every refresh interval, no restart",
                recovery: "resumes when the provider is back",
            },
        }
    }

    /// One short sentence (well under the 120-character warning limit) for kubectl users.
    pub fn failure_warning(self, with_fallback: bool) -> String {
        let text = match (self, with_fallback) {
            (Mode::Eso, _) => "new pods start from the synced Secret; values may be silently stale",
            (Mode::Csi, _) => "new pods cannot start while the provider is down",
            (Mode::Init, false) => "new pods cannot start while the provider is down; values change only on restart",
            (Mode::Sidecar, false) => "new pods wait for the first fetch; running pods keep the last good values",
            (Mode::Init, true) | (Mode::Sidecar, true) => {
                "new pods start from the fallback Secret if the provider is down"
            }
        };
        ["secretmode ", self.as_str(), ": ", text].concat()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outage {
    pub running_pods: &'static str,
    pub new_pods: &'static str,
    pub rotation: &'static str,
    pub recovery: &'static str,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a mode; valid modes are {VALID_MODES}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trip() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
        }
        assert!("Sidecar".parse::<Mode>().unwrap_err().contains(VALID_MODES));
    }

    #[test]
    fn one_list_names_every_mode() {
        assert_eq!(VALID_MODES, "eso, csi, init, sidecar");
        assert_eq!(Mode::ALL.map(Mode::as_str).join(", "), VALID_MODES);
        for m in Mode::ALL {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
    }

    #[test]
    fn warnings_fit_kubectl_limit() {
        for m in Mode::ALL {
            for fb in [false, true] {
                assert!(m.failure_warning(fb).len() < 120);
            }
        }
    }
}
