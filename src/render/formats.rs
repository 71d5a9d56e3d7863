//! The fixed formats of `<prefix>/bundle.<file>` (task T fills this in).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    Dotenv,
    Json,
    Yaml,
    Properties,
}
