//! Reusable model-input buffers. A batch tensor is a few MB (2 MB per 416 px tile); taking
//! a fresh one per batch costs an allocation and a page fault per 4 KiB on first write.
//! Buffers come back to the pool when the batch is dropped, after its model run.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// A pool of `f32` buffers. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct TensorPool {
    free: Arc<Mutex<Vec<Vec<f32>>>>,
    /// Buffers kept for reuse at most; more are freed on return.
    max_free: usize,
}

impl TensorPool {
    /// A pool keeping up to `max_free` idle buffers.
    pub fn new(max_free: usize) -> Self {
        Self {
            free: Arc::new(Mutex::new(Vec::new())),
            max_free,
        }
    }

    /// A pool holding `count` idle buffers of `len` values from the start, their memory
    /// written once so that it is resident now: the pipeline's memory is at its bound from
    /// the first frame instead of creeping up to it as load peaks come and go.
    pub fn preallocated(count: usize, len: usize) -> Self {
        Self::preallocated_up_to(count, count, len)
    }

    /// [`TensorPool::preallocated`] with `count` buffers, keeping up to `max_free` idle ones.
    pub fn preallocated_up_to(count: usize, max_free: usize, len: usize) -> Self {
        let pool = Self::new(max_free.max(count));
        let buffers = (0..count)
            .map(|_| {
                let mut data = Vec::with_capacity(len);
                // Not zero: a fresh allocation is zeroed lazily by the kernel, and writing
                // zeros over it may be optimised away, leaving it unmapped.
                data.resize(len, 1.0);
                data
            })
            .collect();
        *pool.free.lock().unwrap_or_else(|e| e.into_inner()) = buffers;
        pool
    }

    /// A buffer of exactly `len` values. Its contents are unspecified (the caller writes
    /// every value it reads back).
    pub fn take(&self, len: usize) -> PooledTensor {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut data = reused.unwrap_or_default();
        data.resize(len, 0.0);
        PooledTensor {
            data,
            pool: Some(self.clone()),
        }
    }

    /// Idle buffers now.
    pub fn idle(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn give_back(&self, data: Vec<f32>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.max_free {
            free.push(data);
        }
    }
}

/// A buffer on loan from a [`TensorPool`]; returns to it when dropped.
#[derive(Debug)]
pub struct PooledTensor {
    data: Vec<f32>,
    pool: Option<TensorPool>,
}

impl PooledTensor {
    /// A buffer of no pool (tests, one-off tensors).
    pub fn unpooled(data: Vec<f32>) -> Self {
        Self { data, pool: None }
    }

    /// Shortens the buffer to `len` values (its memory stays for the next user).
    pub fn truncate(&mut self, len: usize) {
        self.data.truncate(len);
    }
}

impl Deref for PooledTensor {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.data
    }
}

impl DerefMut for PooledTensor {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
}

impl Drop for PooledTensor {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(std::mem::take(&mut self.data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_after_drop() {
        let pool = TensorPool::new(2);
        let first = pool.take(1000);
        let address = first.as_ptr();
        drop(first);
        assert_eq!(pool.idle(), 1);
        let second = pool.take(800);
        assert_eq!(second.len(), 800);
        assert_eq!(second.as_ptr(), address, "the same memory comes back");
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn a_preallocated_pool_lends_its_own_buffers() {
        let pool = TensorPool::preallocated(3, 500);
        assert_eq!(pool.idle(), 3);
        let taken: Vec<PooledTensor> = (0..3).map(|_| pool.take(500)).collect();
        assert!(taken.iter().all(|t| t.len() == 500));
        assert_eq!(pool.idle(), 0);
        drop(taken);
        assert_eq!(pool.idle(), 3, "all three come back");
    }

    #[test]
    fn the_pool_keeps_at_most_max_free() {
        let pool = TensorPool::new(1);
        let (a, b) = (pool.take(10), pool.take(10));
        drop((a, b));
        assert_eq!(pool.idle(), 1);
        drop(PooledTensor::unpooled(vec![0.0; 4]));
        assert_eq!(pool.idle(), 1);
    }
}
