//! The caching allocator's book-keeping: freed buffers kept for reuse by exact size (the
//! sampling loop allocates the same shapes every step, so after the first step no allocation
//! reaches the driver), the byte counts a benchmark reads, and which buffers belong to a CUDA
//! graph.
//!
//! A graph replays its kernels on the addresses they had when it was captured, so every buffer
//! the capturing thread is handed out during a capture belongs to that graph until the graph is
//! dropped: when its tensor is dropped it goes to the graph's own free list (the capture may
//! reuse it, in stream order, for a later buffer of the same size) and never back to the shared
//! pool, where an unrelated tensor could take it and have a replay write over it. PyTorch's
//! graph-private memory pools follow the same rule.

use std::collections::HashMap;
use std::thread::ThreadId;

use super::device::MemoryStats;

/// Names one graph's buffers in the pool.
pub(crate) type GraphId = u64;

/// Bytes of freed buffers the shared pool keeps at most before it returns them to the driver.
const POOL_MAX_BYTES: usize = 8 << 30;

/// A capture in progress.
struct Capture {
    id: GraphId,
    thread: ThreadId,
    /// Buffers of the graph freed during the capture, by size.
    free: HashMap<usize, Vec<u64>>,
}

/// The allocator's state (behind the device's mutex).
#[derive(Default)]
pub(crate) struct Pool {
    free: HashMap<usize, Vec<u64>>,
    /// Bytes in free lists: the shared one, a capture's and the graphs' (held from the driver,
    /// not in use by a tensor).
    cached_bytes: usize,
    /// Bytes handed out and not yet dropped.
    in_use: usize,
    peak_in_use: usize,
    peak_held: usize,
    capture: Option<Capture>,
    /// Buffer address → the graph it belongs to, for every buffer of a live graph.
    owner: HashMap<u64, GraphId>,
    /// Each live graph's buffers that no tensor holds.
    reserved: HashMap<GraphId, Vec<(u64, usize)>>,
    next_graph: GraphId,
}

impl Pool {
    /// The capture of the calling thread, if it is capturing.
    fn my_capture(&mut self) -> Option<&mut Capture> {
        let me = std::thread::current().id();
        self.capture.as_mut().filter(|c| c.thread == me)
    }

    /// A free buffer of exactly `bytes`, counted as handed out; `None`: ask the driver and pass
    /// the result to [`Pool::add_fresh`]. A capturing thread reuses its graph's buffers first.
    pub(crate) fn take(&mut self, bytes: usize) -> Option<u64> {
        let mine = self
            .my_capture()
            .and_then(|c| c.free.get_mut(&bytes).and_then(Vec::pop));
        let ptr = match mine {
            Some(p) => p,
            None => self.free.get_mut(&bytes).and_then(Vec::pop)?,
        };
        self.cached_bytes -= bytes;
        self.hand_out(ptr, bytes);
        Some(ptr)
    }

    /// Counts a buffer fresh from the driver as handed out.
    pub(crate) fn add_fresh(&mut self, ptr: u64, bytes: usize) {
        self.hand_out(ptr, bytes);
    }

    fn hand_out(&mut self, ptr: u64, bytes: usize) {
        if let Some(id) = self.my_capture().map(|c| c.id) {
            self.owner.insert(ptr, id);
        }
        self.in_use += bytes;
        self.peak_in_use = self.peak_in_use.max(self.in_use);
        self.peak_held = self.peak_held.max(self.in_use + self.cached_bytes);
    }

    /// Takes back a dropped buffer. `true`: the shared pool is full, the caller returns the
    /// buffer to the driver.
    pub(crate) fn give_back(&mut self, ptr: u64, bytes: usize) -> bool {
        self.in_use -= bytes;
        if let Some(&id) = self.owner.get(&ptr) {
            match self.capture.as_mut().filter(|c| c.id == id) {
                Some(c) => c.free.entry(bytes).or_default().push(ptr),
                None => self.reserved.entry(id).or_default().push((ptr, bytes)),
            }
            self.cached_bytes += bytes;
            return false;
        }
        if self.cached_bytes + bytes > POOL_MAX_BYTES {
            return true;
        }
        self.cached_bytes += bytes;
        self.free.entry(bytes).or_default().push(ptr);
        false
    }

    /// Empties the shared free lists (to return them to the driver); graphs keep theirs.
    pub(crate) fn drain(&mut self) -> Vec<(usize, Vec<u64>)> {
        let drained: Vec<(usize, Vec<u64>)> = self.free.drain().collect();
        let bytes: usize = drained.iter().map(|(b, ptrs)| b * ptrs.len()).sum();
        self.cached_bytes -= bytes;
        drained
    }

    /// Starts tagging the calling thread's buffers for a new graph. `None` when a capture is
    /// already in progress (one at a time per device).
    pub(crate) fn begin_capture(&mut self) -> Option<GraphId> {
        if self.capture.is_some() {
            return None;
        }
        self.next_graph += 1;
        let id = self.next_graph;
        self.capture = Some(Capture {
            id,
            thread: std::thread::current().id(),
            free: HashMap::new(),
        });
        Some(id)
    }

    /// Ends the capture: its free buffers stay reserved for the graph.
    pub(crate) fn end_capture(&mut self) {
        if let Some(c) = self.capture.take() {
            let kept = c
                .free
                .into_iter()
                .flat_map(|(b, ptrs)| ptrs.into_iter().map(move |p| (p, b)));
            self.reserved.entry(c.id).or_default().extend(kept);
        }
    }

    /// The graph `id` is gone (dropped, or its capture failed): its buffers are ordinary again,
    /// the free ones back in the shared pool.
    pub(crate) fn release_graph(&mut self, id: GraphId) {
        if self.capture.as_ref().is_some_and(|c| c.id == id) {
            self.end_capture();
        }
        self.owner.retain(|_, g| *g != id);
        for (ptr, bytes) in self.reserved.remove(&id).unwrap_or_default() {
            self.free.entry(bytes).or_default().push(ptr);
        }
    }

    /// The current and peak bytes in use and held from the driver (in use + pooled).
    pub(crate) fn stats(&self) -> MemoryStats {
        MemoryStats {
            in_use: self.in_use,
            peak_in_use: self.peak_in_use,
            held: self.in_use + self.cached_bytes,
            peak_held: self.peak_held,
        }
    }

    /// Starts the peaks over from the current values.
    pub(crate) fn reset_peaks(&mut self) {
        self.peak_in_use = self.in_use;
        self.peak_held = self.in_use + self.cached_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;

    #[test]
    fn a_graphs_buffers_stay_its_own_until_it_is_released() {
        let mut pool = Pool::default();
        pool.add_fresh(0x1000, 256); // before the capture: an ordinary buffer
        assert!(!pool.give_back(0x1000, 256));
        let id = pool.begin_capture().unwrap();
        assert_eq!(pool.begin_capture(), None, "one capture at a time");
        // The capture reuses the shared buffer, then one of its own: both become the graph's.
        assert_eq!(pool.take(256), Some(0x1000));
        assert_eq!(pool.take(256), None);
        pool.add_fresh(0x2000, 256);
        assert!(!pool.give_back(0x1000, 256));
        assert_eq!(
            pool.take(256),
            Some(0x1000),
            "the capture reuses its own freed buffer"
        );
        assert!(!pool.give_back(0x1000, 256));
        pool.end_capture();
        // 0x2000 is still held (the graph's output); 0x1000 is reserved for the graph.
        assert_eq!((pool.stats().in_use, pool.stats().held), (256, 512));
        assert_eq!(
            pool.take(256),
            None,
            "a graph's buffer must not go to anyone else"
        );
        assert!(!pool.give_back(0x2000, 256));
        assert_eq!(pool.take(256), None);
        pool.release_graph(id);
        let mut back = [pool.take(256), pool.take(256)];
        back.sort();
        assert_eq!(back, [Some(0x1000), Some(0x2000)]);
        assert_eq!((pool.stats().in_use, pool.stats().held), (512, 512));
    }
}
