//! The provider budget costs nothing on the admission path where it does not apply: deciding
//! a sidecar pod in a namespace whose rule sets no `maxProviderRequestsPerSecond` makes
//! exactly as many allocations as with no budget in the config at all, and a pod under its
//! budget as many as without one. Counted by a global allocator, on this thread only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use secretmode::config::{Config, DEFAULT_CONFIG_YAML};
use secretmode::decide::admit_pod;
use serde_json::{json, Value};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    COUNT.with(Cell::get)
}

fn config(rules: &str) -> Config {
    let base = DEFAULT_CONFIG_YAML.split("\npolicy:").next().unwrap();
    Config::from_yaml(&format!("{base}\npolicy:\n  rules:\n{rules}"), "test.yaml").unwrap()
}

fn sidecar() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": {
            "secrets/mode": "sidecar", "secrets/refresh-interval": "1m",
            "secrets/item.a": "apps/a#k", "secrets/item.b": "apps/b#k",
        }},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]},
    })
}

#[test]
fn no_allocation_where_no_budget_applies() {
    let none = config("    - name: team\n      namespaces: [\"team-*\"]\n      enforcement: warn\n");
    let elsewhere = config(
        "    - name: tight\n      namespaces: [tight]\n      maxProviderRequestsPerSecond: 0.01\n      enforcement: warn\n    - name: team\n      namespaces: [\"team-*\"]\n      enforcement: warn\n",
    );
    let roomy = config("    - name: team\n      namespaces: [\"team-*\"]\n      maxProviderRequestsPerSecond: 100\n      enforcement: warn\n");
    let pod = sidecar();
    // Warm up lazily initialised state (tracing callsites, the config's caches) first.
    for c in [&none, &elsewhere, &roomy] {
        admit_pod(&pod, "team-a", c);
    }
    let base = allocations(|| drop(admit_pod(&pod, "team-a", &none)));
    assert!(base > 0, "the counter counts");
    assert_eq!(allocations(|| drop(admit_pod(&pod, "team-a", &elsewhere))), base, "budget on another namespace");
    assert_eq!(allocations(|| drop(admit_pod(&pod, "team-a", &roomy))), base, "under its budget");
    // And over it, the warning is the only extra work.
    assert!(allocations(|| drop(admit_pod(&pod, "tight", &elsewhere))) > 0);
}
