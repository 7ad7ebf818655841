//! Who may issue work on a stream that is sometimes captured into a CUDA graph. While a thread
//! captures, every launch on the stream is recorded into its graph, whoever issues it; so other
//! threads must wait, and a capture must wait for calls already under way on other threads (a
//! call that passed the check just before the capture began would otherwise land in the graph).
//! A runtime holds a [`Pass`] for each call; a capture holds the gate from its beginning to its
//! end.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

#[derive(Default)]
struct State {
    capturer: Option<ThreadId>,
    /// Calls under way on threads other than the capturer's.
    inside: usize,
}

/// The gate of one stream.
#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

/// Leave to issue work for as long as it lives.
pub(crate) struct Pass<'a> {
    gate: &'a Gate,
    counted: bool,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(g).unwrap_or_else(|p| p.into_inner())
    }

    /// Waits while another thread captures; the capturer itself passes at once.
    pub(crate) fn enter(&self) -> Pass<'_> {
        let me = std::thread::current().id();
        let mut g = self.lock();
        while g.capturer.is_some_and(|t| t != me) {
            g = self.wait(g);
        }
        let counted = g.capturer.is_none();
        g.inside += usize::from(counted);
        Pass {
            gate: self,
            counted,
        }
    }

    /// Makes the calling thread the capturer, once no other thread captures or is inside a
    /// call. The caller must not hold a [`Pass`].
    pub(crate) fn begin_capture(&self) {
        let mut g = self.lock();
        while g.capturer.is_some() || g.inside > 0 {
            g = self.wait(g);
        }
        g.capturer = Some(std::thread::current().id());
    }

    /// Ends the capture (of the calling thread); waiting threads go on.
    pub(crate) fn end_capture(&self) {
        self.lock().capturer = None;
        self.changed.notify_all();
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.gate.lock().inside -= 1;
            self.gate.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::Gate;

    #[test]
    fn other_threads_wait_for_a_capture_and_a_capture_waits_for_calls_under_way() {
        let gate = Arc::new(Gate::default());
        let (began, ending) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        // A call under way holds a capture back until it ends.
        let pass = gate.enter();
        let capturer = {
            let (gate, began, ending) = (gate.clone(), began.clone(), ending.clone());
            std::thread::spawn(move || {
                gate.begin_capture();
                began.store(true, Ordering::SeqCst);
                drop(gate.enter()); // the capturer's own calls pass
                std::thread::sleep(Duration::from_millis(100));
                ending.store(true, Ordering::SeqCst);
                gate.end_capture();
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !began.load(Ordering::SeqCst),
            "the capture began during a call"
        );
        drop(pass);
        while !began.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // Another thread's call waits until the capture has ended.
        drop(gate.enter());
        assert!(
            ending.load(Ordering::SeqCst),
            "a call passed during the capture"
        );
        capturer.join().unwrap();
    }
}
