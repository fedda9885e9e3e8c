//! GPU buffers with stable ids, and a pool that hands activation buffers back out so a decode step allocates nothing.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// One wgpu buffer and the id bind groups are cached under.
pub struct GpuBuf {
    pub(crate) id: u64,
    pub(crate) buffer: wgpu::Buffer,
    /// Bytes (a multiple of 4).
    pub(crate) size: u64,
}

/// How many GPU objects have been created: the per-token counts come from differences of these.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub dispatches: u64,
    pub submits: u64,
    pub readback_bytes: u64,
    /// Buffers, bind groups and pipelines created.
    pub allocations: u64,
}

impl Counters {
    /// The work done since `earlier` was taken.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            dispatches: self.dispatches - earlier.dispatches,
            submits: self.submits - earlier.submits,
            readback_bytes: self.readback_bytes - earlier.readback_bytes,
            allocations: self.allocations - earlier.allocations,
        }
    }
}

#[derive(Default)]
pub(crate) struct Pool {
    free: RefCell<HashMap<u64, Vec<GpuBuf>>>,
    next_id: Cell<u64>,
    pub(crate) counters: Cell<Counters>,
}

impl Pool {
    pub(crate) fn count(&self, f: impl FnOnce(&mut Counters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    pub(crate) fn create(
        &self,
        device: &wgpu::Device,
        size: u64,
        usage: wgpu::BufferUsages,
        label: &str,
    ) -> GpuBuf {
        let size = size.max(4).next_multiple_of(4);
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        self.count(|c| c.allocations += 1);
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        });
        GpuBuf { id, buffer, size }
    }

    /// A storage buffer of exactly `size` bytes (rounded to 4), reused when one is free.
    pub(crate) fn take(self: &Rc<Self>, device: &wgpu::Device, size: u64) -> Rc<Slab> {
        let size = size.max(4).next_multiple_of(4);
        // The lowest id, not the last freed: every decode step then gets the same buffers in the same order, so
        // its bind groups come from the cache whatever the drop order of earlier work was.
        let reused = self.free.borrow_mut().get_mut(&size).and_then(|v| {
            let lowest = (0..v.len()).min_by_key(|&i| v[i].id)?;
            Some(v.swap_remove(lowest))
        });
        let buf = reused.unwrap_or_else(|| {
            self.create(
                device,
                size,
                wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                "activation",
            )
        });
        Rc::new(Slab {
            buf: Some(buf),
            pool: self.clone(),
        })
    }
}

/// A pooled buffer; dropping it returns the buffer to the pool. Work already recorded that reads it stays valid:
/// the GPU runs recorded dispatches in order, so a later writer cannot overtake an earlier reader.
pub struct Slab {
    buf: Option<GpuBuf>,
    pool: Rc<Pool>,
}

impl Slab {
    pub(crate) fn buf(&self) -> &GpuBuf {
        self.buf.as_ref().expect("a live slab holds its buffer")
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool
                .free
                .borrow_mut()
                .entry(buf.size)
                .or_default()
                .push(buf);
        }
    }
}
