//! The soak's producer: reference orders and membership changes at a steady pace, both streams
//! advancing together in event time (as live topics would), until stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reference_data::{MembershipGenerator, OrderGenerator, ProduceOptions, REFERENCE_OWNERS};
use serde::Serialize;

use crate::shape::Shape;
use crate::SoakError;

/// Event time between two orders; membership changes come every [`MEMBER_STEP`] (six orders).
const ORDER_STEP: i64 = 10;
const MEMBER_STEP: i64 = 60;
/// Order ids per owner: keys the merge sees again and again, spread over many files.
const ORDERS_PER_OWNER: u64 = 200;

/// What was produced.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Produced {
    /// Order messages.
    pub orders: u64,
    /// Membership messages.
    pub members: u64,
}

/// A producer thread.
pub(crate) struct Producer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Produced, SoakError>>,
}

impl Producer {
    /// Starts producing `orders_per_second` orders (generators seeded with `seed`).
    pub fn start(shape: &Shape, seed: u64, orders_per_second: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, shape) = (stop.clone(), shape.clone());
        let thread = std::thread::spawn(move || produce_until(&shape, seed, orders_per_second, &flag));
        Self { stop, thread }
    }

    /// Stops after the current second's messages are acknowledged; returns the totals.
    pub fn stop(self) -> Result<Produced, SoakError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_else(|_| Err(SoakError::Options("the producer thread panicked".into())))
    }
}

fn produce_until(shape: &Shape, seed: u64, orders_per_second: u64, stop: &AtomicBool) -> Result<Produced, SoakError> {
    let owners: Vec<String> = REFERENCE_OWNERS.iter().map(|s| s.to_string()).collect();
    let mut orders = OrderGenerator::new(seed, owners.clone(), ORDERS_PER_OWNER, chrono::Duration::seconds(ORDER_STEP));
    let mut members = MembershipGenerator::new(seed, owners, chrono::Duration::seconds(MEMBER_STEP));
    let mut produced = Produced::default();
    let options = |count| ProduceOptions { count, rate: 0, bad_fraction: 0.0 };
    while !stop.load(Ordering::Relaxed) {
        let second = Instant::now();
        reference_data::produce(&shape.brokers, &shape.orders_topic, &options(orders_per_second), || orders.next_message())?;
        produced.orders += orders_per_second;
        // Membership changes up to the orders' event time, so neither stream runs ahead.
        let due = (produced.orders as i64 * ORDER_STEP / MEMBER_STEP) as u64 - produced.members;
        reference_data::produce(&shape.brokers, &shape.members_topic, &options(due), || members.next_message())?;
        produced.members += due;
        std::thread::sleep(Duration::from_secs(1).saturating_sub(second.elapsed()));
    }
    Ok(produced)
}
