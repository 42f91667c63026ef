//! Process-wide shared data and shared queues, keyed by vm_id (cpp-host `shared_data.cc`,
//! `shared_queue.cc`). One instance per [`Runtime`](crate::Runtime); every VM of every plugin
//! with the same vm_id sees the same keys and queues, across worker slots and hot swaps.

use std::collections::{HashMap, VecDeque};
use std::sync::Weak;

use parking_lot::{Mutex, RwLock};

use crate::abi::Status;
use crate::plugin::{Slot, Task, deliver};

/// Where `proxy_on_queue_ready` goes: the root context that registered the queue, in its VM.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub slot: Weak<Slot>,
    pub generation: u64,
    pub root: u32,
}

struct Queue {
    items: VecDeque<Vec<u8>>,
    receiver: Receiver,
}

/// (vm_id, key) → (value, cas).
type DataMap = HashMap<(String, Vec<u8>), (Vec<u8>, u32)>;

#[derive(Default)]
pub(crate) struct Shared {
    /// CAS values come from one counter, never 0.
    data: RwLock<DataMap>,
    next_cas: Mutex<u32>,
    queue_ids: Mutex<HashMap<(String, Vec<u8>), u32>>,
    queues: Mutex<HashMap<u32, Queue>>,
}

impl Shared {
    pub fn get(&self, vm_id: &str, key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
        self.data
            .read()
            .get(&(vm_id.to_owned(), key.to_vec()))
            .cloned()
            .ok_or(Status::NotFound)
    }

    /// `cas == 0` writes unconditionally; otherwise the key's current cas must match.
    pub fn set(&self, vm_id: &str, key: Vec<u8>, value: Vec<u8>, cas: u32) -> Result<(), Status> {
        let mut data = self.data.write();
        let entry = data.entry((vm_id.to_owned(), key));
        if let std::collections::hash_map::Entry::Occupied(e) = &entry
            && cas != 0
            && e.get().1 != cas
        {
            return Err(Status::CasMismatch);
        }
        let next = {
            let mut n = self.next_cas.lock();
            *n = n.wrapping_add(1).max(1);
            *n
        };
        entry.insert_entry((value, next));
        Ok(())
    }

    /// Registering an existing name keeps its id and items; the latest registrant receives
    /// `proxy_on_queue_ready` (each worker's VM registers the same name in its root context).
    pub fn register_queue(&self, vm_id: &str, name: Vec<u8>, receiver: Receiver) -> u32 {
        let mut ids = self.queue_ids.lock();
        let next = ids.len() as u32 + 1;
        let id = *ids.entry((vm_id.to_owned(), name)).or_insert(next);
        let mut queues = self.queues.lock();
        match queues.get_mut(&id) {
            Some(q) => q.receiver = receiver,
            None => {
                queues.insert(
                    id,
                    Queue {
                        items: VecDeque::new(),
                        receiver,
                    },
                );
            }
        }
        id
    }

    pub fn resolve_queue(&self, vm_id: &str, name: &[u8]) -> Result<u32, Status> {
        self.queue_ids
            .lock()
            .get(&(vm_id.to_owned(), name.to_vec()))
            .copied()
            .ok_or(Status::NotFound)
    }

    pub fn enqueue(&self, id: u32, value: Vec<u8>, max_items: usize) -> Result<(), Status> {
        let receiver = {
            let mut queues = self.queues.lock();
            let q = queues.get_mut(&id).ok_or(Status::NotFound)?;
            if q.items.len() >= max_items {
                return Err(Status::InternalFailure);
            }
            q.items.push_back(value);
            q.receiver.clone()
        };
        // Delivered after the current VM call if the receiver is this very VM (see `deliver`).
        if let Some(slot) = receiver.slot.upgrade() {
            deliver(
                &slot,
                Task::QueueReady {
                    generation: receiver.generation,
                    root: receiver.root,
                    queue: id,
                },
            );
        }
        Ok(())
    }

    pub fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        let mut queues = self.queues.lock();
        let q = queues.get_mut(&id).ok_or(Status::NotFound)?;
        q.items.pop_front().ok_or(Status::Empty)
    }
}
