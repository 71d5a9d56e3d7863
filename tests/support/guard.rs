//! The one kill-on-drop guard: a child process the test started is killed and reaped when the
//! guard goes out of scope, also when the test panics.

use std::process::Child;

pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    pub fn child(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
