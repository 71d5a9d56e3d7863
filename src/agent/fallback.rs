//! Seeding from the fallback Secret (mounted `optional: true` into the agent container only,
//! one key per item name) when the provider cannot be reached before the start deadline.

use std::collections::BTreeMap;
use std::path::Path;

use crate::providers::AgentItem;

/// Every item's content from `dir`, or why the fallback cannot be used (never a value).
pub fn load(dir: &Path, items: &[AgentItem]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut files = BTreeMap::new();
    let mut missing = Vec::new();
    for item in items {
        match std::fs::read(dir.join(&item.name)) {
            Ok(bytes) if !bytes.iter().all(u8::is_ascii_whitespace) => {
                files.insert(item.name.clone(), bytes);
            }
            Ok(_) => missing.push(format!("{} (empty)", item.name)),
            Err(_) => missing.push(item.name.clone()),
        }
    }
    if missing.is_empty() {
        Ok(files)
    } else {
        Err(format!("fallback Secret at {} lacks {}", dir.display(), missing.join(", ")))
    }
}
